//! Refused `server.tls = "acme"` configs, each with the errors it must give.

use super::*;

/// `[server]` with `tls = "acme"` (lines 1 and 2), then `[server.acme]` (line 3) and `extra`
/// from line 4.
fn acme(extra: &[&str]) -> String {
    with(&["[server]", "tls = \"acme\"", "[server.acme]"], extra)
}

pub(super) fn acme_cases() -> Vec<Case> {
    vec![
        case(
            "tls = \"acme\" without [server.acme]",
            lines(&["[server]", "tls = \"acme\""]),
            vec![at(
                "server.tls",
                2,
                &["needs a [server.acme] table", "domains"],
            )],
        ),
        case(
            "[server.acme] without tls = \"acme\"",
            lines(&["[server.acme]", "domains = [\"hooks.example.com\"]"]),
            vec![at(
                "server.acme",
                1,
                &["only read with tls = \"acme\"", "or remove [server.acme]"],
            )],
        ),
        case(
            "tls = \"acme\" beside certificate files",
            lines(&[
                "[server]",
                "tls = \"acme\"",
                "tls_cert = \"cert.pem\"",
                "[server.acme]",
                "domains = [\"hooks.example.com\"]",
            ]),
            vec![at(
                "server.tls",
                2,
                &["tls = \"acme\" and tls_cert/tls_key"],
            )],
        ),
        case(
            "bad [server.acme] values are each reported at their line",
            acme(&[
                "domains = []",
                "contact = \"ops@example.com\"",
                "directory = \"http://acme.example.com/directory\"",
                "http_listen = \"port 80\"",
            ]),
            vec![
                at("server.acme.domains", 4, &["at least one name"]),
                at(
                    "server.acme.contact",
                    5,
                    &["is not a mailto: URI", "mailto:ops@example.com"],
                ),
                at("server.acme.directory", 6, &["plain HTTP", "https://"]),
                at("server.acme.http_listen", 7, &["is not an address:port"]),
            ],
        ),
        case(
            "names HTTP-01 cannot prove",
            acme(&[
                "domains = [\"*.example.com\", \"192.0.2.1\", \"no_underscores.example.com\", \
                 \"localhost\", \"Hooks.example.com\", \"hooks.example.com.\"]",
            ]),
            vec![
                at("server.acme.domains[0]", 4, &["wildcard", "DNS-01"]),
                at("server.acme.domains[1]", 4, &["is an address"]),
                at("server.acme.domains[2]", 4, &["is not a DNS name"]),
                at("server.acme.domains[3]", 4, &["is not a DNS name"]),
                at("server.acme.domains[5]", 4, &["listed twice"]),
            ],
        ),
        case(
            "the filter protecting the HTTP-01 port",
            lines(&[
                "[filter]",
                "protected_ports = [443, 80]",
                "[server]",
                "tls = \"acme\"",
                "[server.acme]",
                "domains = [\"hooks.example.com\"]",
            ]),
            vec![at(
                "server.acme.http_listen",
                5,
                &[
                    "port 80 of the HTTP-01 listener (0.0.0.0:80) is in filter.protected_ports",
                    "validators connect from addresses on no allowlist",
                    "remove 80 from filter.protected_ports",
                ],
            )],
        ),
        case(
            "the HTTP-01 listener on the HTTPS port",
            acme(&[
                "domains = [\"hooks.example.com\"]",
                "http_listen = \"0.0.0.0:443\"",
            ]),
            vec![at(
                "server.acme.http_listen",
                5,
                &["is in filter.protected_ports"],
            )],
        ),
        case(
            "the HTTP-01 listener on the metrics port",
            acme(&[
                "domains = [\"hooks.example.com\"]",
                "http_listen = \"127.0.0.1:9184\"",
            ]),
            vec![at(
                "server.acme.http_listen",
                5,
                &["is also metrics.listen (127.0.0.1:9184)"],
            )],
        ),
        case(
            "an unknown [server.acme] key",
            acme(&[
                "domains = [\"hooks.example.com\"]",
                "domain = \"x.example.com\"",
            ]),
            vec![at("server.acme.domain", 5, &["did you mean `domains`?"])],
        ),
    ]
}
