//! Generates the gyre.v1 client and server code with a vendored `protoc` (no system protoc
//! needed), plus the file descriptor set that gRPC reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("gyre_v1_descriptor.bin"))
        .compile_with_config(config, &["gyre/v1/gyre.proto"], &["."])?;
    println!("cargo:rerun-if-changed=gyre/v1/gyre.proto");
    Ok(())
}
