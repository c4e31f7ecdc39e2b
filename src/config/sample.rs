//! The production sample configuration, `conf/glint-api.conf.production`, which the Debian
//! package (`scripts/package`) installs as `/etc/glint/glint-api.conf`.
//!
//! [`production_sample`] renders it from the options table: every option of [`OPTIONS`], in
//! its section, commented out with its default, its type, what it does and what a reload
//! (SIGHUP) does with a changed value. A unit test keeps the committed file equal to the
//! rendering, so an option added to the table appears in the package's file once the test is
//! re-blessed (`GLINT_BLESS=1 cargo test --lib production_sample`), and the file cannot drift.
//!
//! The few values a packaged server needs that differ from glint's built-in defaults, or that
//! the package's other files rely on (the logrotate snippet reads the pid file), are set
//! uncommented, each with the reason, from [`PACKAGE_SETTINGS`]. This module only renders
//! text; `tests/package.rs` checks that the result passes `glint-api --check-config`.

use super::{DefaultValue, OptionSpec, OPTIONS};

/// A value the package's sample sets instead of leaving the option at its default.
pub struct PackageSetting {
    /// The option's section, as in [`OPTIONS`].
    pub section: &'static str,
    /// The option's name, as in [`OPTIONS`].
    pub name: &'static str,
    /// The value written, uncommented.
    pub value: &'static str,
    /// Why the package sets it, for the operator who reads the file.
    pub why: &'static str,
}

/// The values the sample sets: the Debian layout (glint's state under /var/lib/glint, its log
/// under /var/log/glint, its pid file under /run/glint, the three directories the package, the
/// init script and the systemd unit give to the user glint) and a loopback address while no
/// authentication is configured.
pub static PACKAGE_SETTINGS: &[PackageSetting] = &[
    PackageSetting {
        section: "DEFAULT",
        name: "bind_host",
        value: "127.0.0.1",
        why: "Loopback only, unlike glint's default (all addresses): auth_strategy is noauth \
              until you choose otherwise, and then anyone who reaches glint may read, upload, \
              change and delete every image. Set up access control (auth_strategy = token, or a \
              keystone flavor in [paste_deploy]) first, then the address clients use.",
    },
    PackageSetting {
        section: "DEFAULT",
        name: "pid_file",
        value: "/run/glint/glint-api.pid",
        why: "glint's default, set because the package's other files rely on it: the init \
              script and `glint-api reload|stop|status` find the server through it, and \
              /etc/logrotate.d/glint-api sends SIGUSR1 to the pid it holds. /run/glint is the \
              systemd unit's RuntimeDirectory=; the init script creates it. Move it, and edit \
              the logrotate snippet too.",
    },
    PackageSetting {
        section: "DEFAULT",
        name: "log_file",
        value: "/var/log/glint/glint-api.log",
        why: "glint logs to stderr by default; the package logs here, in the directory it gives \
              to glint (mode 0750), and /etc/logrotate.d/glint-api rotates the file (SIGUSR1 \
              makes glint reopen it).",
    },
    PackageSetting {
        section: "glance_store",
        name: "filesystem_store_datadir",
        value: "/var/lib/glint/images",
        why: "Glance's default, /var/lib/glance/images, is not glint's to write (and is \
              read-only under the systemd unit's ProtectSystem=strict). For a data disk \
              elsewhere: give it to glint:glint, mode 0750, and under systemd add a drop-in \
              with ReadWritePaths=.",
    },
    PackageSetting {
        section: "database",
        name: "connection",
        value: "sqlite:////var/lib/glint/glint.sqlite",
        why: "glint's default, set so that the whole layout shows here: the image metadata, in \
              the state directory beside the images.",
    },
    PackageSetting {
        section: "image_cache",
        name: "image_cache_dir",
        value: "/var/lib/glint/image-cache",
        why: "Used only with a caching flavor. Glance's default, /var/lib/glance/image-cache, \
              is not glint's to write (and is read-only under the systemd unit).",
    },
];

/// Where the rendering lives in the source tree.
pub const PRODUCTION_SAMPLE_PATH: &str = "conf/glint-api.conf.production";

/// The width comments are wrapped to.
const WIDTH: usize = 99;

const HEADER: &str = "\
# /etc/glint/glint-api.conf: the configuration of glint-api, glint's OpenStack Image API v2
# (Glance) server, as the Debian package installs it.
#
# Every option glint reads is below, in its section, commented out with its default, what it
# does and what a reload (SIGHUP) does with a changed value. The few values the package sets
# fit its layout (/var/lib/glint, /var/log/glint, /run/glint, all owned by the user glint) or
# keep a fresh install closed; each says why. Option names follow glance-api.conf, and a
# relative path is relative to /etc/glint.
#
# Check an edit with `glint-api --check-config` (it prints every effective value, or every
# problem with its line), then apply it with `systemctl reload glint-api` or
# `/etc/init.d/glint-api reload`: a reload checks the file first and changes nothing when it is
# invalid, and a running server takes up every change without failing a request.
# This file may hold secrets (Keystone's password): keep it root:glint, mode 0640.
# More in glint-api(8) and /usr/share/doc/glint/OPERATIONS.md.
#
# In glint's source tree this file is generated from the options table (src/config/options.rs)
# by src/config/sample.rs; regenerate it with `GLINT_BLESS=1 cargo test --lib production_sample`.
";

/// The production sample, as `conf/glint-api.conf.production` holds it.
pub fn production_sample() -> String {
    let mut text = String::from(HEADER);
    // Sections in the order their first option appears, each with all of its options, so an
    // option appended to the table in an earlier section still lands under its header.
    let mut sections: Vec<&str> = Vec::new();
    for spec in OPTIONS {
        if !sections.contains(&spec.section) {
            sections.push(spec.section);
        }
    }
    for section in sections {
        text.push_str(&format!("\n[{section}]\n"));
        for spec in OPTIONS.iter().filter(|spec| spec.section == section) {
            text.push('\n');
            render_option(&mut text, spec);
        }
    }
    text
}

/// One option: a heading line with its type and default, its doc, its reload behaviour, and
/// the line itself, commented out unless the package sets it.
fn render_option(text: &mut String, spec: &OptionSpec) {
    let default = match spec.default {
        DefaultValue::Text("") => "default: empty".to_string(),
        DefaultValue::Text(value) => format!("default: {value}"),
        DefaultValue::Derived(description) => format!("default: {description}"),
    };
    comment(
        text,
        &format!("{} ({}; {default})", spec.name, spec.kind.describe()),
    );
    comment(text, spec.doc);
    comment(text, &format!("On reload: {}.", spec.on_reload));
    let setting = PACKAGE_SETTINGS
        .iter()
        .find(|setting| setting.section == spec.section && setting.name == spec.name);
    match (setting, spec.default) {
        (Some(setting), _) => {
            comment(text, &format!("Set by the package: {}", setting.why));
            text.push_str(&format!("{} = {}\n", spec.name, setting.value));
        }
        (None, DefaultValue::Text(value)) => {
            text.push_str(&format!("#{} = {value}\n", spec.name));
        }
        // A derived default has no text to write; the heading says what it is.
        (None, DefaultValue::Derived(_)) => text.push_str(&format!("#{} =\n", spec.name)),
    }
}

/// Appends `sentence` as `# ` comment lines wrapped at [`WIDTH`] (a longer word stands alone).
fn comment(text: &mut String, sentence: &str) {
    let mut line = String::from("#");
    for word in sentence.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > WIDTH {
            text.push_str(&line);
            text.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    text.push_str(&line);
    text.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed file is the rendering of today's options table.
    #[test]
    fn production_sample_file_matches_the_options_table() {
        crate::generated_docs::check_file(
            &format!("{}/{PRODUCTION_SAMPLE_PATH}", env!("CARGO_MANIFEST_DIR")),
            &production_sample(),
            "the production sample config",
            "production_sample",
        );
    }

    /// Every option appears once, as a line of its own (set or commented out), under its
    /// section; every setting names an option that exists, and sets it uncommented.
    #[test]
    fn production_sample_lists_every_option_once_and_sets_the_package_values() {
        let sample = production_sample();
        let mut section = "";
        let mut seen: Vec<(String, String)> = Vec::new();
        for line in sample.lines() {
            if let Some(name) = line
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
            {
                section = name;
            } else if !line.starts_with("# ") && line.contains(" =") {
                let name = line.trim_start_matches('#').split(" =").next().unwrap();
                seen.push((section.to_string(), name.to_string()));
            }
        }
        let expected: Vec<(String, String)> = OPTIONS
            .iter()
            .map(|spec| (spec.section.to_string(), spec.name.to_string()))
            .collect();
        let mut seen_sorted = seen.clone();
        seen_sorted.sort();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        assert_eq!(seen_sorted, expected_sorted);
        assert_eq!(seen.len(), OPTIONS.len());
        for setting in PACKAGE_SETTINGS {
            assert!(
                OPTIONS
                    .iter()
                    .any(|spec| spec.section == setting.section && spec.name == setting.name),
                "[{}] {} is not an option",
                setting.section,
                setting.name
            );
            let line = format!("\n{} = {}\n", setting.name, setting.value);
            assert_eq!(sample.matches(&line).count(), 1, "{line:?}");
        }
        assert_eq!(
            sample
                .lines()
                .filter(|line| !line.starts_with('#') && line.contains(" = "))
                .count(),
            PACKAGE_SETTINGS.len()
        );
    }
}
