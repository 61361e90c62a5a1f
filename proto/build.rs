//! Compiles `airlock/v1/approvals.proto` without a system `protoc`: protox parses it into a
//! FileDescriptorSet, tonic-prost-build generates messages, client and server from that.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = ["airlock/v1/approvals.proto", "airlock/v1/link.proto"];
    // protox does not emit rerun-if-changed lines itself (only the protoc path of prost-build does).
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
