//! Secret files and the TLS key that group or others can read: a warning at start and in
//! `hookwall check`, as ssh gives for a private key, with the `chmod` that fixes it. A warning,
//! not an error: the file may be shared on purpose (a group the daemon's user is in), and a
//! refusal to start would be a worse outage than the exposure it reports.

use std::{
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use super::{Config, SecretRef, Sink, Tls};

/// Permission bits that let someone other than the owner at a file.
const NOT_OWNER: u32 = 0o077;

/// A file holding a secret that group or others may access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseFile {
    /// The key that names it, e.g. `server.tls_key` or `route "/hooks/gh" secrets[0]`.
    pub key: String,
    /// The file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl fmt::Display for LooseFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        write!(
            f,
            "{path} ({}) is accessible by group or others (mode {:04o}); it holds a secret: run \
             `chmod 600 {path}`",
            self.key,
            self.mode & 0o7777
        )
    }
}

impl Config {
    /// The secret files and the TLS private key whose mode lets group or others at them, in
    /// config order. A file that cannot be read is left out here: reading the secret reports it.
    #[must_use]
    pub fn loose_permissions(&self) -> Vec<LooseFile> {
        let mut files: Vec<(String, &Path)> = Vec::new();
        if let Tls::Files { key, .. } = &self.server.tls {
            files.push(("server.tls_key".into(), key));
        }
        for route in &self.routes {
            if let Some(SecretRef::File(path)) = &route.token {
                files.push((format!("route \"{}\" token", route.path), path));
            }
            for (i, secret) in route.secrets.iter().enumerate() {
                if let SecretRef::File(path) = secret {
                    files.push((format!("route \"{}\" secrets[{i}]", route.path), path));
                }
            }
        }
        if let Some(delivery) = &self.delivery {
            if let Some(SecretRef::File(path)) = &delivery.secret {
                files.push(("delivery.secret".into(), path));
            }
            if let Sink::Nats(nats) = &delivery.sink
                && let Some(SecretRef::File(path)) = &nats.token
            {
                files.push(("delivery.nats.token".into(), path));
            }
        }
        files
            .into_iter()
            .filter_map(|(key, path)| {
                let mode = std::fs::metadata(path).ok()?.permissions().mode();
                (mode & NOT_OWNER != 0).then(|| LooseFile {
                    key,
                    path: path.to_path_buf(),
                    mode,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{fs::Permissions, os::unix::fs::PermissionsExt as _};

    use super::super::tests::parse_ok;

    #[test]
    fn a_secret_file_or_tls_key_open_to_group_or_others_is_named_with_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("gh.secret");
        let key = dir.path().join("privkey.pem");
        let cert = dir.path().join("fullchain.pem");
        for file in [&secret, &key, &cert] {
            std::fs::write(file, "x\n").expect("write");
        }
        let text = format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\n\n[[route]]\npath = \"/hooks/gh\"\n\
             verify = \"github\"\nsecrets = [{{ env = \"GH\" }}, {{ file = {:?} }}]\n",
            cert.display().to_string(),
            key.display().to_string(),
            secret.display().to_string(),
        );
        let config = parse_ok(&text);
        let chmod = |path: &std::path::Path, mode| {
            std::fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
        };

        chmod(&secret, 0o644);
        chmod(&key, 0o600);
        // A certificate is public: its mode is none of this check's business.
        chmod(&cert, 0o644);
        let loose = config.loose_permissions();
        assert_eq!(loose.len(), 1, "{loose:?}");
        let warning = loose[0].to_string();
        let path = secret.display();
        assert!(
            warning.contains(&format!("chmod 600 {path}`"))
                && warning.contains("route \"/hooks/gh\" secrets[1]")
                && warning.contains("mode 0644"),
            "{warning}"
        );

        chmod(&key, 0o640);
        let loose = config.loose_permissions();
        assert_eq!(loose.len(), 2, "{loose:?}");
        assert_eq!(loose[0].key, "server.tls_key");

        chmod(&secret, 0o600);
        chmod(&key, 0o400);
        assert_eq!(config.loose_permissions(), Vec::new());
    }
}
