//! Reading URLs as text, for checks and displays that must never show credentials or keys.

/// Whether a URL carries `user:password@`. Read on the text, so it works (and nothing is echoed)
/// even when the URL does not parse.
pub(crate) fn has_userinfo(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

/// A URL for display: its query string (which may carry a key) replaced by `?…`.
pub(crate) fn without_query(url: &str) -> std::borrow::Cow<'_, str> {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…").into(),
        None => url.into(),
    }
}
