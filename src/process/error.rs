//! The process layer's error type: a failed system call, with the call, the object it was made
//! on, and the errno, so that every log line about it says all three.

use std::fmt;

use nix::errno::Errno;

/// A system call that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysError {
    /// The call as the log shows it, with its arguments, e.g. `kill(1234, SIGHUP)`.
    pub call: String,
    /// What it was for, e.g. `spawning a child for generation 3`.
    pub purpose: String,
    pub errno: Errno,
}

impl SysError {
    pub fn new(call: impl Into<String>, purpose: impl Into<String>, errno: Errno) -> SysError {
        SysError {
            call: call.into(),
            purpose: purpose.into(),
            errno,
        }
    }

    /// From an `io::Error` that carries an errno (EIO when it carries none).
    pub fn from_io(
        call: impl Into<String>,
        purpose: impl Into<String>,
        error: &std::io::Error,
    ) -> SysError {
        let errno = Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO));
        SysError::new(call, purpose, errno)
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Errno's Display is "EAGAIN: Try again": the name and the description.
        write!(
            f,
            "{} failed while {}: {}",
            self.call, self.purpose, self.errno
        )
    }
}

impl std::error::Error for SysError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_call_the_purpose_and_the_errno() {
        let error = SysError::new("fork()", "spawning a child for generation 3", Errno::EAGAIN);
        assert_eq!(
            error.to_string(),
            "fork() failed while spawning a child for generation 3: EAGAIN: Try again"
        );
    }
}
