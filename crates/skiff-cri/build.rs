//! Compiles the vendored CRI v1 proto (see `proto/README.md`) into Rust types,
//! a tonic client and a tonic server trait. `protox` parses the `.proto` in
//! pure Rust and hands tonic's codegen a `FileDescriptorSet`, so the build
//! machine needs no `protoc`.

fn main() {
    const PROTO: &str = "proto/runtime/v1/api.proto";
    println!("cargo:rerun-if-changed={PROTO}");

    let fds = match protox::compile([PROTO], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("parsing {PROTO}: {e:?}"),
    };
    if let Err(e) = tonic_prost_build::configure()
        // The server trait is for in-process test servers (ours and the
        // agent's); stubs answer `Unimplemented`, so a test implements only
        // the calls it exercises.
        .build_server(true)
        .generate_default_stubs(true)
        // We connect through our own unix-socket connector, not `connect(url)`.
        .build_transport(false)
        .compile_fds(fds)
    {
        panic!("generating CRI code from {PROTO}: {e}");
    }
}
