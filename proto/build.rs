//! Generates the gRPC services from `proto/chronik/v1/*.proto` with the
//! vendored `protoc` (no system protobuf needed). madsim-tonic-build writes
//! two versions, the real one and the simulated one; `tonic::include_proto!`
//! picks the one matching the build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    grpc()?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn grpc() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    let protos = ["proto/chronik/v1/admin.proto", "proto/chronik/v1/cluster.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_build::configure().compile_protos_with_config(config, &protos, &["proto"])?;
    Ok(())
}
