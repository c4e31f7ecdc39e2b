//! The HTTP/1.1 layer: parsing request heads, decoding bodies, writing responses, and the loop
//! that serves one connection.
//!
//! This layer knows nothing of Glance or of processes. The parsing pieces work on byte slices and
//! `BufRead`/`Write` values so that each can be tested without a socket; `connection` and `serve`
//! put them on a `TcpStream`.

pub mod body;
pub mod connection;
pub mod error;
pub mod head;
pub mod parked;
pub mod request_id;
pub mod response;
pub mod sending;
pub mod serve;

pub use error::HttpError;
