//! TLS for the mesh.
#![forbid(unsafe_code)]

mod client_hello;

pub use self::client_hello::{parse_client_hello, ClientHello, Parsed};
