//! Benchmarks of the WebSocket codec (being written).
fn main() {}
