//! Generates the `ledge.v1` code with a vendored `protoc`, so nothing beyond cargo is needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    env::set_var("PROTOC", protoc);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_build::configure()
        .file_descriptor_set_path(out.join("ledge_descriptor.bin"))
        .compile_protos(&["proto/ledge.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/ledge.proto");
    Ok(())
}
