//! What this build is: its version, the git revision it was built from, and the digest of the
//! XDP program it carries. `hookwall --version`, `hookwall_build_info` and `status` say the same.

use std::sync::OnceLock;

/// The crate's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision the binary was built from, with `-dirty` when the tree had uncommitted
/// changes; `unknown` when built outside a git checkout (from a source tarball, say) without
/// `HOOKWALL_GIT_REVISION` set.
pub const GIT_REVISION: &str = env!("HOOKWALL_GIT_REVISION");

/// SHA-256 of the embedded XDP program, in hex: the digest `status` compares with the pinned
/// program's.
#[must_use]
pub fn program_sha256() -> &'static str {
    static HEX: OnceLock<String> = OnceLock::new();
    HEX.get_or_init(|| hex::encode(crate::filter::object_sha256()))
}

/// The text after the name in `hookwall --version`: version, revision, program digest.
#[must_use]
pub fn long_version() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{VERSION}\nrevision: {GIT_REVISION}\nprogram-sha256: {}",
            program_sha256()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_digest_is_the_embedded_objects() {
        let digest = program_sha256();
        assert_eq!(digest.len(), 64);
        assert_eq!(digest, hex::encode(crate::filter::object_sha256()));
        assert!(long_version().contains(digest));
        assert!(long_version().starts_with(VERSION));
    }
}
