//! Compiles `proto/` into Rust with `protox` (no system `protoc`) and `tonic-prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let fds = protox::compile(
        [
            "destination.proto",
            "identity.proto",
            "inbound.proto",
            "opaque_transport.proto",
            "outbound.proto",
        ],
        ["../proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
