//! Rebuild when bpf-linker changes (cargo cannot see that dependency otherwise).
fn main() {
    match which::which("bpf-linker") {
        Ok(p) => println!("cargo:rerun-if-changed={}", p.display()),
        Err(e) => println!("cargo:warning=bpf-linker not found ({e}); run `cargo xtask setup`"),
    }
}
