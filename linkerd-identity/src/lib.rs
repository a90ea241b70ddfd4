//! The proxy's own identity.
#![forbid(unsafe_code)]
