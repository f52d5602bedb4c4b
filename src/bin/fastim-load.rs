//! Load generator for fastim (being written).
fn main() {}
