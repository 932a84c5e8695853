//! Rebuild when bpf-linker changes: the link step depends on it but cargo cannot see that.
//! Also tells bpf-linker (which does the code generation) that the target tolerates misaligned
//! loads, so a 16- or 32-bit header field is one load rather than a byte-by-byte gather.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    }
    println!("cargo::rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
}
