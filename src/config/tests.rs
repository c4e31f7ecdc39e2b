//! Tests of the config loader.
