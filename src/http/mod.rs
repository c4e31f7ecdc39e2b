//! The HTTP/1.1 layer: parsing request heads, decoding bodies and writing responses.
//!
//! This layer knows nothing of Glance or of processes; it works on byte slices and
//! `BufRead`/`Write` values so that every piece can be tested without a socket.

pub mod body;
pub mod error;
pub mod head;
pub mod response;
