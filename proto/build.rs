//! Compiles `airlock/v1/approvals.proto` without a system `protoc`: protox parses it into a
//! FileDescriptorSet, tonic-prost-build generates messages, client and server from that.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "airlock/v1/approvals.proto";
    // protox does not emit rerun-if-changed lines itself (only the protoc path of prost-build does).
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["."])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
