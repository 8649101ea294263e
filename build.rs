//! Build script: generates the protobuf message types of the etcd v3 API
//! from `proto/` with prost-build, using the protoc binary vendored by the
//! `protoc-bin-vendored` crate so no system protoc is needed. Messages only;
//! gRPC dispatch is hand-written in `src/api/grpc`.

use std::path::PathBuf;

/// The .proto files, relative to `proto/`.
const PROTOS: [&str; 5] = [
    "etcdserverpb/rpc.proto",
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "v3electionpb/v3election.proto",
    "v3lockpb/v3lock.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    prost_build::Config::new()
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        // Every `bytes` field becomes `bytes::Bytes`: keys and values are
        // sliced from the received buffer instead of copied.
        .bytes(["."])
        .compile_protos(&files, &[root])?;
    Ok(())
}
