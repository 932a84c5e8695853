//! Secret references: reading the secrets they point at.

use super::*;

#[test]
fn secrets_resolve_from_files_without_trailing_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "s3cret\r\n\n").unwrap();
    let secret = SecretRef::File(path.clone()).resolve().unwrap();
    assert_eq!(secret.expose(), b"s3cret");
    assert_eq!(&*secret, b"s3cret");
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");

    std::fs::write(&path, "\n").unwrap();
    let err = SecretRef::File(path.clone()).resolve().unwrap_err();
    assert!(matches!(err, SecretError::Empty { .. }), "{err}");

    let missing = dir.path().join("absent");
    let err = SecretRef::File(missing.clone()).resolve().unwrap_err();
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn secrets_resolve_from_the_environment() {
    // PATH is set in every test environment; setting a variable here would race other tests.
    let secret = SecretRef::Env("PATH".into()).resolve().unwrap();
    assert!(!secret.is_empty());
    let name = "HOOKWALL_TEST_VARIABLE_THAT_IS_NEVER_SET";
    let err = SecretRef::Env(name.into()).resolve().unwrap_err();
    assert!(matches!(err, SecretError::EnvNotSet { .. }));
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn secrets_resolve_from_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stripe"), "whsec_abc\n").unwrap();
    let stripe = SecretRef::Credential("stripe".into());
    let secret = stripe.resolve_in(Some(dir.path())).unwrap();
    assert_eq!(secret.expose(), b"whsec_abc", "trailing newlines are cut");

    // Outside a unit that passes credentials: the message says where the variable comes from
    // and what to write instead.
    let err = stripe.resolve_in(None).unwrap_err();
    assert!(
        matches!(err, SecretError::CredentialsDirectoryNotSet { .. }),
        "{err}"
    );
    let message = err.to_string();
    for fragment in [
        "credential stripe: $CREDENTIALS_DIRECTORY is not set",
        "LoadCredential=stripe:PATH",
        "SetCredential=stripe:VALUE",
        "{ file = \"PATH\" }",
    ] {
        assert!(message.contains(fragment), "{fragment:?} not in {message}");
    }

    let absent = SecretRef::Credential("absent".into());
    let err = absent.resolve_in(Some(dir.path())).unwrap_err();
    assert!(matches!(err, SecretError::Credential { .. }), "{err}");
    let message = err.to_string();
    let path = dir.path().join("absent");
    assert!(
        message.starts_with(&format!(
            "cannot read credential absent ({})",
            path.display()
        )),
        "{message}"
    );
    assert!(message.contains("LoadCredential=absent:PATH"), "{message}");

    std::fs::write(dir.path().join("blank"), "\r\n").unwrap();
    let err = SecretRef::Credential("blank".into())
        .resolve_in(Some(dir.path()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "secret from credential blank is empty: an empty secret would let anyone through"
    );
}

#[test]
fn a_credential_is_read_once_and_kept_for_the_reloads_after_the_start() {
    // As under a unit without User=: the daemon reads its credentials as root at start and
    // again at each reload as daemon.run_as, who cannot read them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mpesa");
    std::fs::write(&path, "first\n").unwrap();
    let mpesa = SecretRef::Credential("mpesa".into());
    assert_eq!(
        mpesa.resolve_in(Some(dir.path())).unwrap().expose(),
        b"first"
    );

    std::fs::write(&path, "second\n").unwrap();
    assert_eq!(
        mpesa.resolve_in(Some(dir.path())).unwrap().expose(),
        b"first",
        "systemd never rewrites a running unit's credentials: what start read stays"
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        mpesa.resolve_in(Some(dir.path())).unwrap().expose(),
        b"first",
        "a credential that cannot be read any more is still the one read at start"
    );

    // Another directory is another unit's credential: read on its own.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("mpesa"), "other").unwrap();
    assert_eq!(
        mpesa.resolve_in(Some(other.path())).unwrap().expose(),
        b"other"
    );
}

#[test]
fn credential_names_are_plain_file_names() {
    use crate::config::secret::is_credential_name;
    for good in ["stripe", "stripe.key", "a-b_c", "..x"] {
        assert!(is_credential_name(good), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "/abs", "a\0b"] {
        assert!(!is_credential_name(bad), "{bad:?}");
    }
}

#[test]
fn secret_refs_display_where_not_what() {
    assert_eq!(SecretRef::Env("A".into()).to_string(), "env A");
    assert_eq!(SecretRef::File("/s/a".into()).to_string(), "file /s/a");
    assert_eq!(
        SecretRef::Credential("stripe".into()).to_string(),
        "credential stripe"
    );
}
