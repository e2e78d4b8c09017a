//! Compiles `proto/*.proto` with protox, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["sotto.proto", "client.proto"], ["proto"])?;
    prost_build::Config::new()
        // Blobs and values are carried as `Bytes` so a frame's payload is
        // sliced, never copied, on its way to storage.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
