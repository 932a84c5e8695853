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
fn secret_refs_display_where_not_what() {
    assert_eq!(SecretRef::Env("A".into()).to_string(), "env A");
    assert_eq!(SecretRef::File("/s/a".into()).to_string(), "file /s/a");
}
