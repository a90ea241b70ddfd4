//! TLS for the mesh.
#![forbid(unsafe_code)]
