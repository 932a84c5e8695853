//! `cargo xtask run`: builds and runs the daemon for development.
use std::{io::Read as _, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{build, display, is_root, on_path, project_root, setup, target_dir};

/// The bundled development config, relative to the project root (the daemon runs there).
pub const DEV_CONFIG: &str = "filter-user/hookwall.dev.toml";
/// The variable the daemon reads the M-Pesa callback token from.
pub const TOKEN_VAR: &str = "HOOKWALL_MPESA_TOKEN";

/// Sets up, builds, then replaces this process with `hookwall` (under sudo when not root).
///
/// `exec` rather than spawn-and-wait: `cargo run` and the rustup proxy exec too, so `hookwall` ends
/// up as the only process in the chain. Ctrl-C then reaches just the daemon, which shuts down
/// gracefully, instead of also killing a waiting parent and leaving the daemon orphaned.
pub fn run(release: bool, args: &[String]) -> Result<()> {
    setup::setup()?;
    build::build_bins(release)?;
    let profile = if release { "release" } else { "debug" };
    let bin = target_dir().join(profile).join("hookwall");

    let default_args = [
        String::from("run"),
        String::from("-c"),
        DEV_CONFIG.to_owned(),
    ];
    let args = if args.is_empty() {
        let config = project_root().join(DEV_CONFIG);
        if !config.is_file() {
            bail!("the dev config {} is missing", config.display());
        }
        &default_args[..]
    } else {
        args
    };

    let mut cmd = if is_root()? {
        Command::new(&bin)
    } else if on_path("sudo") {
        println!("note: XDP needs root; running hookwall under sudo");
        let mut sudo = Command::new("sudo");
        // sudo drops the environment by default; the token and the log filter must get through.
        sudo.arg(format!("--preserve-env={TOKEN_VAR},HOOKWALL_LOG"))
            .arg("--")
            .arg(&bin);
        sudo
    } else {
        bail!(
            "hookwall attaches an XDP program and must run as root, and sudo is not installed: \
             run `cargo xtask run` as root"
        );
    };
    cmd.args(args).current_dir(project_root());
    if std::env::var_os(TOKEN_VAR).is_none() {
        let token = dev_token().context("making a random dev token")?;
        println!("note: {TOKEN_VAR} was unset; using a random dev token for this run: {token}");
        // Set on the child (sudo passes it on through --preserve-env), not on this process.
        cmd.env(TOKEN_VAR, token);
    }
    println!("==> {}", display(&cmd));
    let err = cmd.exec();
    Err(err).with_context(|| format!("starting `{}`", display(&cmd)))
}

/// A random token for local runs: 16 bytes of /dev/urandom as hex. Not a secret worth keeping;
/// it only has to differ from run to run so no one relies on a fixed dev value.
fn dev_token() -> Result<String> {
    let mut bytes = [0_u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(hex(&bytes))
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_zero_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn dev_tokens_are_32_hex_digits_and_differ() {
        let (a, b) = (dev_token().unwrap(), dev_token().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
