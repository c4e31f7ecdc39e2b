//! glint: an OpenStack Image API v2 (Glance) server that takes up every configuration change on
//! SIGHUP without failing a client request.
//!
//! # Layout
//!
//! - [`config`]: the options table, the INI loader and the validated, immutable [`config::Config`].
//! - [`http`]: our HTTP/1.1 layer on httparse: request heads, body decoders, response writer.

pub mod config;
pub mod http;
