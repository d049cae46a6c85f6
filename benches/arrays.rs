//! W3 benchmark (placeholder).
fn main() {}
