//! Refused `[[route]]` configs, each with the errors it must give.

use super::*;

pub(super) fn route_cases() -> Vec<Case> {
    let token = "tok3n-VALUE-Sup3rS3cret";
    let signing = "whsec_0123456789abcdefSECRET";
    let number = "8675309112233";
    let mut cases = vec![
        case(
            "route paths must be paths and unique",
            lines(&[
                "[[route]]",
                "path = \"/a\"",
                "verify = \"github\"",
                "secrets = [{ env = \"A\" }]",
                "[[route]]",
                "path = \"/a\"",
                "verify = \"stripe\"",
                "secrets = [{ env = \"B\" }]",
                "[[route]]",
                "path = \"hooks\"",
                "verify = \"stripe\"",
                "secrets = [{ env = \"C\" }]",
            ]),
            vec![
                at("route[1].path", 6, &["already used by route[0] (line 2)"]),
                at(
                    "route[2].path",
                    10,
                    &["must start with '/', e.g. \"/hooks\""],
                ),
            ],
        ),
        case(
            "a route needs path and verify",
            lines(&["[[route]]", "token = { env = \"T\" }"]),
            vec![
                at("route[0]", 1, &["needs a `path`"]),
                at(
                    "route[0]",
                    1,
                    &["needs `verify`, one of: mpesa, standard-webhooks"],
                ),
            ],
        ),
        case(
            "an unknown verify kind suggests one",
            lines(&["[[route]]", "path = \"/x\"", "verify = \"hmac-sha-256\""]),
            vec![at("route[0].verify", 3, &["did you mean \"hmac-sha256\"?"])],
        ),
        case(
            "an mpesa route needs a token",
            lines(&["[[route]]", "path = \"/m\"", "verify = \"mpesa\""]),
            vec![at("route[0]", 1, &["needs token = { env = \"NAME\" }"])],
        ),
        case(
            "an mpesa route with both token and tokens",
            with(MPESA_ROUTE, &["tokens = [{ env = \"NEW\" }]"]),
            vec![at(
                "route[0].tokens",
                5,
                &[
                    "write either `token` or `tokens`, not both",
                    "tokens = [{ env = \"NEW\" }, { env = \"OLD\" }] and remove `token`",
                ],
            )],
        ),
        case(
            "an mpesa route with an empty tokens list",
            with(&MPESA_ROUTE[..3], &["tokens = []"]),
            vec![at("route[0].tokens", 4, &["needs at least one token"])],
        ),
        case(
            "tokens written as one table or inline",
            lines(&[
                "[[route]]",
                "path = \"/m\"",
                "verify = \"mpesa\"",
                "tokens = { env = \"T\" }",
                "[[route]]",
                "path = \"/n\"",
                "verify = \"mpesa\"",
                "tokens = [{ env = \"T\" }, \"s3cr3t-inline-token\"]",
            ]),
            vec![
                at("route[0].tokens", 4, &["tokens is a list"]),
                at(
                    "route[1].tokens[1]",
                    8,
                    &["secrets are never written inline", "this is a string"],
                ),
            ],
        )
        .hiding(&["s3cr3t-inline-token"]),
        case(
            "a signed route takes no tokens",
            with(STRIPE_ROUTE, &["tokens = [{ env = \"T\" }]"]),
            vec![at("route[0].tokens", 5, &["for verify = \"mpesa\" only"])],
        ),
        case(
            "an mpesa route takes no secrets",
            with(MPESA_ROUTE, &["secrets = [{ env = \"S\" }]"]),
            vec![at("route[0].secrets", 5, &["remove secrets"])],
        ),
        case(
            "a signed route needs secrets",
            lines(&STRIPE_ROUTE[..3]),
            vec![at(
                "route[0]",
                1,
                &["needs the signing secret: secrets = [{ env = \"NAME\" }]"],
            )],
        ),
        case(
            "a signed route with an empty secrets list",
            with(&STRIPE_ROUTE[..3], &["secrets = []"]),
            vec![at("route[0].secrets", 4, &[])],
        ),
        case(
            "secrets written as one table",
            with(&STRIPE_ROUTE[..3], &["secrets = { env = \"S\" }"]),
            vec![at("route[0].secrets", 4, &["is a list"])],
        ),
        case(
            "invalid credential names are each refused",
            lines(&[
                "[[route]]",
                "path = \"/s\"",
                "verify = \"stripe\"",
                "secrets = [",
                "  { credential = \"\" },",
                "  { credential = \"a/b\" },",
                "  { credential = \".\" },",
                "  { credential = \"..\" },",
                "  { credential = \"stripe.key\" },",
                "]",
            ]),
            vec![
                at(
                    "route[0].secrets[0]",
                    5,
                    &[
                        "\"\" is not a credential name",
                        "LoadCredential=NAME:PATH",
                        "e.g. secrets = [..., { credential = \"stripe\" }",
                    ],
                ),
                at(
                    "route[0].secrets[1]",
                    6,
                    &["\"a/b\" is not a credential name"],
                ),
                at(
                    "route[0].secrets[2]",
                    7,
                    &["\".\" is not a credential name"],
                ),
                at(
                    "route[0].secrets[3]",
                    8,
                    &["\"..\" is not a credential name"],
                ),
            ],
        ),
        case(
            "a credential reference with a second key",
            with(
                &STRIPE_ROUTE[..3],
                &["secrets = [{ credential = \"s\", env = \"S\" }]"],
            ),
            vec![at(
                "route[0].secrets[0]",
                4,
                &["a secret reference is exactly", "{ credential = \"NAME\" }"],
            )],
        ),
        case(
            "a signed route takes no token",
            with(STRIPE_ROUTE, &["token = { env = \"T\" }"]),
            vec![at("route[0].token", 5, &["for verify = \"mpesa\" only"])],
        ),
        case(
            "inline route secrets are refused without repeating them",
            lines(&[
                "[[route]]",
                "path = \"/mpesa/c2b/confirmation\"",
                "verify = \"mpesa\"",
                &format!("token = \"{token}\""),
                "[[route]]",
                "path = \"/hooks/stripe\"",
                "verify = \"stripe\"",
                &format!("secrets = [{{ env = \"OK\" }}, \"{signing}\", {number}]"),
                "[[route]]",
                "path = \"/hooks/github\"",
                "verify = \"github\"",
                &format!("secrets = \"{signing}\""),
            ]),
            vec![
                at(
                    "route[0].token",
                    4,
                    &[
                        "secrets are never written inline",
                        "write token = { env = \"NAME\" }",
                    ],
                ),
                at("route[1].secrets[1]", 8, &["this is a string"]),
                at("route[1].secrets[2]", 8, &["this is a number"]),
                at(
                    "route[2].secrets",
                    12,
                    &["write secrets = [{ env = \"NAME\" }]"],
                ),
            ],
        )
        .hiding(&[token, signing, number]),
        case(
            "tolerance on a kind without timestamps",
            lines(&[
                "[[route]]",
                "path = \"/g\"",
                "verify = \"github\"",
                "secrets = [{ env = \"G\" }]",
                "tolerance_seconds = 300",
            ]),
            vec![at(
                "route[0].tolerance_seconds",
                5,
                &["no signed timestamp"],
            )],
        ),
        case(
            "an hmac route needs its header",
            lines(HMAC_ROUTE),
            vec![at(
                "route[0]",
                1,
                &["needs the name of the header that carries the signature"],
            )],
        ),
        case(
            "an invalid header name",
            with(HMAC_ROUTE, &["header = \"X Sig\""]),
            vec![at("route[0].header", 5, &[])],
        ),
        case(
            "an unknown encoding",
            with(HMAC_ROUTE, &["header = \"X-Sig\"", "encoding = \"b64\""]),
            vec![at("route[0].encoding", 6, &["\"hex\", \"base64\""])],
        ),
        case(
            "a wrong type inside a route names the route",
            with(
                MPESA_ROUTE,
                &[
                    "[[route]]",
                    "path = \"/x\"",
                    "verify = \"stripe\"",
                    "tolerance_seconds = \"5\"",
                ],
            ),
            vec![at("route[1].tolerance_seconds", 8, &[])],
        ),
    ];
    for (reference, why) in [
        ("{ env = \"A\", file = \"/b\" }", "both"),
        ("{ env = \"\" }", "empty name"),
        ("{ env = \"A=B\" }", "an '=' in the name"),
        ("{ path = \"/b\" }", "neither env nor file"),
        ("{ env = 5 }", "not a string"),
        ("{}", "empty"),
    ] {
        cases.push(case(
            format!("a malformed secret reference: {why}"),
            lines(&[
                "[[route]]",
                "path = \"/g\"",
                "verify = \"github\"",
                &format!("secrets = [{reference}]"),
            ]),
            vec![at(
                "route[0].secrets[0]",
                4,
                &["a secret reference is exactly { env = \"NAME\" }"],
            )],
        ));
    }
    cases.extend([
        case(
            "route allow: an unknown preset name suggests one and lists them",
            with(
                STRIPE_ROUTE,
                &[
                    "allow = [",
                    "  \"203.0.113.0/24\",",
                    "  \"mpesa-extr\",",
                    "]",
                ],
            ),
            vec![at(
                "route[0].allow[1]",
                7,
                &[
                    "unknown preset \"mpesa-extr\" (did you mean \"mpesa-extra\"?)",
                    "mpesa, mpesa-extra",
                    "203.0.113.0/24",
                ],
            )],
        ),
        case(
            "route allow: a CIDR with host bits set, as in allow.cidrs",
            with(STRIPE_ROUTE, &["allow = [\"mpesa\", \"203.0.113.5/24\"]"]),
            vec![exact(
                "route[0].allow[1]",
                5,
                "203.0.113.5/24 has host bits set: write 203.0.113.0/24 for the network or \
                 203.0.113.5/32 for the one address",
            )],
        ),
        case(
            "route allow: a host name is not an address",
            with(STRIPE_ROUTE, &["allow = [\"hooks.stripe.com\"]"]),
            vec![at(
                "route[0].allow[0]",
                5,
                &["`hooks.stripe.com` is not an IP address or CIDR prefix"],
            )],
        ),
        case(
            "route allow: an empty list would refuse everything",
            with(MPESA_ROUTE, &["allow = []"]),
            vec![at(
                "route[0].allow",
                5,
                &[
                    "an empty list would refuse every request on this route",
                    "or remove `allow`",
                ],
            )],
        ),
    ]);
    for bad in ["0", "-5", "86400"] {
        cases.push(case(
            format!("tolerance_seconds = {bad}"),
            with(STRIPE_ROUTE, &[&format!("tolerance_seconds = {bad}")]),
            vec![at("route[0].tolerance_seconds", 5, &["out of range"])],
        ));
    }
    for (line, key) in [
        ("header = \"X\"", "header"),
        ("encoding = \"hex\"", "encoding"),
        ("prefix = \"v1=\"", "prefix"),
    ] {
        cases.push(case(
            format!("{key} on a stripe route"),
            with(STRIPE_ROUTE, &[line]),
            vec![at(
                &format!("route[0].{key}"),
                5,
                &["applies only to verify ="],
            )],
        ));
    }
    cases
}
