//! Generates the gyre.v1 client and server code with a vendored `protoc` (no system protoc
//! needed), plus the file descriptor set that gRPC reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts run single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("gyre_v1_descriptor.bin"))
        .compile_protos(&["gyre/v1/gyre.proto"], &["."])?;
    println!("cargo:rerun-if-changed=gyre/v1/gyre.proto");
    Ok(())
}
