//! Compiles the gRPC contracts with protox (a pure-Rust protobuf compiler), so building firma
//! needs no system `protoc`: firma's own (`proto/firma/v1`, server and client) and the subset of
//! etcd's v3 API the etcd store speaks (`proto/etcd`, client only).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);

    let proto = "proto/firma/v1/authority.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // The encoded descriptor set also backs gRPC server reflection.
    std::fs::write(
        out_dir.join("firma_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;

    let etcd = [
        "proto/etcd/etcdserverpb/rpc.proto",
        "proto/etcd/mvccpb/kv.proto",
    ];
    for file in etcd {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(protox::compile(etcd, ["proto"])?)?;
    Ok(())
}
