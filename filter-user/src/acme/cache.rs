//! `server.acme.cache`: the ACME account key and the certificate, kept across restarts. The
//! directory is 0700 and every file 0600, owned by the daemon's user (`daemon.run_as`); each
//! file is replaced whole (written beside, then renamed), so a crash leaves the old one or
//! the new one, never half of either.
//!
//! - `account.json`: the directory URL and the account's credentials (its private key);
//! - `certificate.pem`: the chain (leaf first) and its private key, in one file so that they
//!   can never disagree.

use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _, chown},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use instant_acme::AccountCredentials;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::{Deserialize, Serialize};

const ACCOUNT: &str = "account.json";
const CERTIFICATE: &str = "certificate.pem";

/// The cache directory, made and handed to the daemon's user.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// A certificate read from the cache, with what the renewal decision needs.
pub(crate) struct Cached {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    /// The leaf's DNS names, lower case.
    pub(crate) names: BTreeSet<String>,
    /// The leaf's validity, Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// The leaf's serial number, hex.
    pub(crate) serial: String,
}

impl Cache {
    /// Makes `dir` (0700) if it is missing and hands it and its files to `owner` (uid, gid):
    /// the daemon writes there after it has dropped root.
    ///
    /// # Errors
    /// If the directory cannot be made, restricted or handed over.
    pub(crate) fn prepare(dir: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<Self> {
        let what = || format!("the ACME cache {} (server.acme.cache)", dir.display());
        fs::create_dir_all(dir).with_context(|| format!("making {}", what()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", what()))?;
        if let Some((uid, gid)) = owner {
            chown(dir, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to uid {uid}", what()))?;
            for name in [ACCOUNT, CERTIFICATE] {
                let file = dir.join(name);
                if file.exists() {
                    chown(&file, Some(uid), Some(gid))
                        .with_context(|| format!("handing {} to uid {uid}", file.display()))?;
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The account stored for `directory`; `None` if there is none, or it is another CA's.
    ///
    /// # Errors
    /// If the file exists but cannot be read or parsed.
    pub(crate) fn account(&self, directory: &str) -> anyhow::Result<Option<AccountCredentials>> {
        let path = self.dir.join(ACCOUNT);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let stored: StoredAccount = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is not an account hookwall wrote; remove it to register a new account",
                path.display()
            )
        })?;
        Ok((stored.directory == directory).then_some(stored.credentials))
    }

    /// Stores the account registered with `directory`.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub(crate) fn save_account(
        &self,
        directory: &str,
        credentials: AccountCredentials,
    ) -> anyhow::Result<()> {
        let stored = StoredAccount {
            directory: directory.to_owned(),
            credentials,
        };
        let text = serde_json::to_vec(&stored).context("serialising the ACME account")?;
        write_private(&self.dir.join(ACCOUNT), &text)
    }

    /// The cached certificate; `None` if there is none. A file that cannot be read or parsed is
    /// logged and counts as none (a new one is ordered and replaces it).
    pub(crate) fn certificate(&self) -> Option<Cached> {
        let path = self.dir.join(CERTIFICATE);
        let pem = match fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot read the cached certificate; ordering a new one"
                );
                return None;
            }
        };
        match parse(&pem) {
            Ok(cached) => Some(cached),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %format!("{e:#}"),
                    "the cached certificate is unusable; ordering a new one"
                );
                None
            }
        }
    }

    /// Stores a certificate: `chain` (PEM, leaf first) and `key` (PEM), in one file.
    ///
    /// # Errors
    /// If the file cannot be written.
    pub(crate) fn save_certificate(&self, chain: &str, key: &str) -> anyhow::Result<()> {
        let mut text = String::with_capacity(chain.len() + key.len() + 1);
        text.push_str(chain.trim_end());
        text.push('\n');
        text.push_str(key);
        write_private(&self.dir.join(CERTIFICATE), text.as_bytes())
    }

    /// The path of the cached certificate (what an operator removes to force a renewal).
    pub(crate) fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE)
    }
}

/// A chain and key in one PEM text, with the leaf's names, validity and serial.
pub(crate) fn parse(pem: &[u8]) -> anyhow::Result<Cached> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificates")?;
    let key = PrivateKeyDer::from_pem_slice(pem).context("reading the private key")?;
    let leaf = chain.first().context("no certificate in the file")?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| anyhow::anyhow!("the leaf is not a parsable X.509 certificate: {e}"))?;
    let mut names = BTreeSet::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.insert(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(Cached {
        names,
        not_before: parsed.validity().not_before.timestamp(),
        not_after: parsed.validity().not_after.timestamp(),
        serial: parsed.raw_serial_as_string(),
        chain,
        key,
    })
}

/// Writes `bytes` to `path` with mode 0600: to a file beside it, synced, then renamed over it.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = (|| {
        let _ = fs::remove_file(&partial);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&partial, path)
    })();
    written.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_stored_private_and_read_back_with_its_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::prepare(&dir.path().join("acme"), None).expect("prepare");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("acme")), 0o700);
        assert!(cache.certificate().is_none(), "empty cache");
        let made = rcgen::generate_simple_self_signed(vec![
            "hooks.example.com".to_owned(),
            "Alt.Example.com".to_owned(),
        ])
        .expect("certificate");
        cache
            .save_certificate(&made.cert.pem(), &made.signing_key.serialize_pem())
            .expect("save");
        assert_eq!(mode(&cache.certificate_path()), 0o600);
        let cached = cache.certificate().expect("cached");
        assert_eq!(
            cached.names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["alt.example.com", "hooks.example.com"]
        );
        assert!(cached.not_after > cached.not_before);
        assert!(!cached.serial.is_empty());
        assert_eq!(cached.chain.len(), 1);

        fs::write(cache.certificate_path(), "not PEM").expect("overwrite");
        assert!(
            cache.certificate().is_none(),
            "an unusable file counts as none"
        );
    }
}
