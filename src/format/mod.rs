//! Format inspection: what an uploaded image really is, checked while its data streams.
//!
//! Each chunk of an upload goes to an [`Inspector`] as it goes to the store, so the data is read
//! once. When the stream ends, [`judge`] compares what the headers say with the image's
//! `disk_format` and answers the `virtual_size` (as `qemu-img info` reports it) or a
//! [`Refusal`]; the upload then commits, or is dropped with its temporary file and the image
//! stays `queued`. What is detected and refused follows oslo.utils' `imageutils.format_inspector`
//! (which replaced glance/common/format_inspector.py) and Glance's `ImageProxy.set_data`
//! (glance/location.py), with two differences, both stricter: a recognised format declared as
//! `raw` is refused (Glance accepts it), and a refused upload leaves no data behind (Glance 32
//! answers 415 and then serves the refused bytes).
//!
//! One file per format: [`qcow2`], [`vmdk`], [`vhd`], [`vhdx`], [`vdi`], [`iso`], and [`gpt`] for the MBR
//! checks of partitioned raw disks; raw is what none of them matches. [`inspector`] keeps the
//! bounded windows of the stream they read.
//!
//! # Bounds
//! Every read of a header field goes through [`Seen::bytes_at`], which answers `None` outside
//! what was kept: no index can panic, and no size read from the data allocates anything (the
//! only regions kept beyond the head are capped at [`inspector::MAX_CAPTURE`]).
//!
//! This module does no I/O and knows nothing of HTTP, the store or the config file: its rules
//! come in as [`Rules`].

pub mod gpt;
pub mod inspector;
pub mod iso;
pub mod qcow2;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

#[cfg(test)]
mod tests;

use std::fmt;

pub use inspector::{Inspector, Seen};

/// The `[image_format]` options the judgement uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    /// `require_image_format_match`: refuse data whose format differs from `disk_format`.
    pub require_format_match: bool,
    /// `vmdk_allowed_types`: the vmdk `createType`s accepted.
    pub vmdk_allowed_types: Vec<String>,
    /// `gpt_safety_checks_nonfatal`: the checks of a partitioned raw disk that only warn.
    pub gpt_nonfatal_checks: Vec<String>,
}

/// A format the inspector recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Nothing else matched: the bytes are the disk.
    Raw,
    Qcow2,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Iso,
    /// A raw disk with a partition table (MBR or GPT).
    Gpt,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vhd => "vhd",
            Format::Vhdx => "vhdx",
            Format::Vdi => "vdi",
            Format::Iso => "iso",
            Format::Gpt => "gpt",
        }
    }
}

/// What a format's parser found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The headers do not parse as the format.
    Unparsable(String),
    /// They parse, and describe something a hypervisor must not be given (a host file to read).
    Unsafe(String),
}

/// Why an upload is refused. Displayed as the message the client gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The data is another format than `disk_format` says.
    Mismatch {
        declared: String,
        detected: &'static str,
    },
    /// The data matches the headers of several formats (other than an ISO or fixed vhd with a
    /// partition table, which are common).
    Ambiguous(Vec<&'static str>),
    /// The data does not parse as its format.
    Unparsable { format: &'static str, why: String },
    /// The data failed a safety check.
    Unsafe { format: &'static str, why: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Mismatch { declared, detected } => write!(
                formatter,
                "Image disk_format {declared} does not match stream data {detected}; set \
                 disk_format to {detected} or upload {declared} data."
            ),
            Refusal::Ambiguous(formats) => write!(
                formatter,
                "Image format inspection failed: the data matches several formats ({}).",
                formats.join(", ")
            ),
            Refusal::Unparsable { format, why } => write!(
                formatter,
                "Image format inspection failed: the data is not a valid {format} image: {why}."
            ),
            Refusal::Unsafe { format, why } => {
                write!(formatter, "Image failed safety checks ({format}): {why}.")
            }
        }
    }
}

/// The disk formats that are the bytes of the disk, with nothing to parse: Glance's `raw` and
/// the Amazon kernel, ramdisk and machine images.
pub const RAW_FORMATS: &[&str] = &["raw", "ami", "ari", "aki"];

/// The next region beyond the head that a header asks the inspector to keep.
pub(crate) fn wanted_region(seen: &Seen<'_>) -> Option<(u64, usize)> {
    if seen.head.starts_with(vmdk::MAGIC) {
        vmdk::wanted_region(seen)
    } else if vhdx::matches(seen) {
        vhdx::wanted_region(seen)
    } else {
        None
    }
}

/// Every format whose signature the data carries.
pub fn detect(seen: &Seen<'_>) -> Vec<Format> {
    let mut formats = Vec::new();
    for (format, matches) in [
        (Format::Qcow2, qcow2::matches as fn(&Seen<'_>) -> bool),
        (Format::Vmdk, vmdk::matches),
        (Format::Vhd, vhd::matches),
        (Format::Vhdx, vhdx::matches),
        (Format::Vdi, vdi::matches),
        (Format::Iso, iso::matches),
        (Format::Gpt, gpt::matches),
    ] {
        if matches(seen) {
            formats.push(format);
        }
    }
    formats
}

/// Judges an upload whose stream has ended: its `virtual_size`, or why it is refused.
///
/// `declared` is the image's `disk_format`; `container_format` other than `bare` is not
/// compared with it (the data is then a container, as Glance has it), but the safety checks of
/// whatever the data is still apply. `missed` is [`Inspector::missed`].
pub fn judge(
    seen: &Seen<'_>,
    missed: bool,
    declared: &str,
    container_format: &str,
    rules: &Rules,
) -> Result<Option<u64>, Refusal> {
    let mut detected = detect(seen);
    // Glance: an ISO with a partition table in front is a bootable-as-block ISO; the same holds
    // for a fixed vhd (its footer is at the end) of a partitioned disk.
    if detected.len() == 2
        && detected.contains(&Format::Gpt)
        && (detected.contains(&Format::Iso) || detected.contains(&Format::Vhd))
    {
        detected.retain(|format| *format != Format::Gpt);
    }
    let format = match detected.as_slice() {
        [] => Format::Raw,
        [one] => *one,
        many => {
            return Err(Refusal::Ambiguous(
                many.iter().map(|format| format.name()).collect(),
            ))
        }
    };
    let unparsable = |why: String| Refusal::Unparsable {
        format: format.name(),
        why,
    };
    let refuse = |problem: Problem| match problem {
        Problem::Unparsable(why) => unparsable(why),
        Problem::Unsafe(why) => Refusal::Unsafe {
            format: format.name(),
            why,
        },
    };
    if missed && matches!(format, Format::Vmdk | Format::Vhdx) {
        return Err(unparsable(
            "a header points at data that is out of order or larger than the inspector keeps"
                .to_string(),
        ));
    }
    // The safety checks first: they hold whatever was declared.
    let virtual_size = match format {
        Format::Raw => seen.size,
        Format::Gpt => {
            if let Some(why) = gpt::mbr_problem(seen) {
                if rules
                    .gpt_nonfatal_checks
                    .iter()
                    .any(|name| name == gpt::MBR_CHECK)
                {
                    log::warn!(
                        "image format inspection: {why} (non-fatal: gpt_safety_checks_nonfatal)"
                    );
                } else {
                    return Err(Refusal::Unsafe { format: "gpt", why });
                }
            }
            seen.size
        }
        Format::Qcow2 => qcow2::inspect(seen).map_err(refuse)?,
        Format::Vmdk => vmdk::inspect(seen, &rules.vmdk_allowed_types).map_err(refuse)?,
        Format::Vhd => vhd::inspect(seen).map_err(refuse)?,
        Format::Vhdx => vhdx::inspect(seen).map_err(refuse)?,
        Format::Vdi => vdi::inspect(seen).map_err(refuse)?,
        Format::Iso => iso::inspect(seen).map_err(refuse)?,
    };
    if container_format != "bare" {
        return Ok(None);
    }
    let same = match format {
        Format::Raw | Format::Gpt => RAW_FORMATS.contains(&declared),
        other => other.name() == declared,
    };
    if same {
        return Ok(Some(virtual_size));
    }
    let inspectable = RAW_FORMATS.contains(&declared)
        || ["qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso"].contains(&declared);
    if !inspectable && matches!(format, Format::Raw) {
        // ploop is not parsed (oslo.utils has no inspector for it either): data that is none of
        // the formats above is accepted for it, without a virtual size.
        return Ok(None);
    }
    let refusal = match format {
        Format::Raw | Format::Gpt if inspectable => unparsable_declared(declared),
        _ => Refusal::Mismatch {
            declared: declared.to_string(),
            detected: format.name(),
        },
    };
    if rules.require_format_match {
        Err(refusal)
    } else {
        log::warn!(
            "image format does not match and require_image_format_match is false: {refusal}"
        );
        Ok(None)
    }
}

/// The refusal for data that carries no signature of its declared format.
fn unparsable_declared(declared: &str) -> Refusal {
    let format = match declared {
        "qcow2" => "qcow2",
        "vmdk" => "vmdk",
        "vhd" => "vhd",
        "vhdx" => "vhdx",
        "vdi" => "vdi",
        "iso" => "iso",
        _ => "raw",
    };
    Refusal::Unparsable {
        format,
        why: format!("no {format} header was found"),
    }
}
