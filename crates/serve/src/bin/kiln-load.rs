//! `kiln-load`: placeholder, replaced below.
fn main() {}
