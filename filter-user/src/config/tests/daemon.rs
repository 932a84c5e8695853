//! `[daemon]`: the user `hookwall run` becomes.

use super::*;

#[test]
fn run_as_names_a_user_of_the_host() {
    assert_eq!(parse_ok("").daemon.run_as, None, "root by default");
    let config = parse_ok(&lines(&["[daemon]", "run_as = \"hookwall\""]));
    let shown = config.render_check();
    assert!(
        shown.contains("run as            hookwall (uid 990, gid 985) after start"),
        "{shown}"
    );
    let user = config.daemon.run_as.expect("run_as");
    assert_eq!(
        (user.name.as_str(), user.uid, user.gid),
        ("hookwall", 990, 985)
    );
}

#[test]
fn run_as_a_missing_or_empty_user_is_refused_with_the_fix() {
    let errors = parse_err_with(&lines(&["[daemon]", "run_as = \"hookwal\""]), &host());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[0].key.as_deref(), Some("daemon.run_as"));
    assert_contains(&errors[0], "no user `hookwal` on this host");
    assert_contains(&errors[0], "useradd --system");
    let errors = parse_err_with(&lines(&["[daemon]", "run_as = \"\""]), &host());
    assert_contains(&errors[0], "the user name is empty");
    let errors = parse_err_with(&lines(&["[daemon]", "run_us = \"hookwall\""]), &host());
    assert_contains(&errors[0], "did you mean `run_as`?");
}
