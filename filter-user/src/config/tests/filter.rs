//! `[filter]`: configs it accepts, and the one error that depends on the host.

use super::*;

#[test]
fn protected_ports_default_to_the_listen_port() {
    let config = parse_ok(&lines(&["[server]", "listen = \"[::]:8443\""]));
    assert_eq!(config.filter.protected_ports, [8443]);
    let config = parse_ok(&lines(&["[filter]", "protected_ports = [9000, 443, 9000]"]));
    assert_eq!(
        config.filter.protected_ports,
        [443, 9000],
        "sorted and deduplicated"
    );
}

#[test]
fn listed_interfaces_are_kept_in_order() {
    let config = parse_ok(&lines(&["[filter]", "interfaces = [\"lo\", \"eth0\"]"]));
    assert_eq!(config.filter.interfaces, ["lo", "eth0"]);
    assert!(!config.filter.interfaces_from_default_route);
    // An empty list means the same as no key: the default route's interface.
    let config = parse_ok(&lines(&["[filter]", "interfaces = []"]));
    assert_eq!(config.filter.interfaces, ["eth0"]);
    assert!(config.filter.interfaces_from_default_route);
}

#[test]
fn given_ports_allow_an_os_chosen_listen_port() {
    // Tests bind port 0; the table's "listen port zero" row is the same without the ports.
    let config = parse_ok(&lines(&[
        "[filter]",
        "protected_ports = [8443]",
        "[server]",
        "listen = \"127.0.0.1:0\"",
    ]));
    assert_eq!(config.server.listen.port(), 0);
}

#[test]
fn no_default_route_and_no_interfaces_is_an_error() {
    let host = FakeHost {
        interfaces: vec!["lo".into()],
        default: None,
    };
    let errors = parse_err_with("", &host);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key.as_deref(), Some("filter.interfaces"));
    assert_eq!(errors[0].line, None, "the key is not in the file");
    assert_contains(&errors[0], "no default route");
    assert_contains(&errors[0], "this host has: lo");
}
