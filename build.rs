//! Rebuilds when the web client changes: `static/` is embedded into the binary,
//! and a file added there must reach it too.

fn main() {
    println!("cargo:rerun-if-changed=static");
}
