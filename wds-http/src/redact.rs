//! URLs without their secrets, for logs, errors and stored reasons.

/// `url` with its password and query string masked (`***`), and its
/// fragment dropped: what may appear in a log line, an error or a stored
/// dead-letter reason. The user name, host, port and path stay, so the
/// endpoint remains recognisable.
///
/// Works on text that does not parse as a URL too (it then masks anything
/// between `://` and the last `@`, and everything after `?`).
///
/// ```
/// use wds_http::redact_url;
///
/// assert_eq!(
///     redact_url("https://bot:hunter2@hooks.example/alert?api_key=abc#x"),
///     "https://bot:***@hooks.example/alert?***"
/// );
/// assert_eq!(redact_url("redis://:pw@10.0.0.5:6379/2"), "redis://:***@10.0.0.5:6379/2");
/// assert_eq!(redact_url("http://127.0.0.1:8090/webhook"), "http://127.0.0.1:8090/webhook");
/// ```
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let (rest, query) = match url.split_once('?') {
        Some((rest, _)) => (rest, true),
        None => (url.split_once('#').map_or(url, |(r, _)| r), false),
    };
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let mut out = match rest.find("://") {
        Some(scheme) => {
            let after = scheme + 3;
            // The authority ends at the first '/' after the scheme.
            let end = rest[after..].find('/').map_or(rest.len(), |i| after + i);
            match rest[after..end].rfind('@') {
                Some(at) => {
                    let userinfo = &rest[after..after + at];
                    let user = userinfo.split_once(':').map(|(u, _)| u);
                    let masked = match user {
                        Some(user) => format!("{user}:***"),
                        // A bare token before '@' is as secret as a password.
                        None => "***".to_owned(),
                    };
                    format!("{}{masked}{}", &rest[..after], &rest[after + at..])
                }
                None => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    if query {
        out.push_str("?***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_tokens_and_queries() {
        for (given, shown) in [
            ("https://u:p@h/x?k=v", "https://u:***@h/x?***"),
            ("https://token@h/x", "https://***@h/x"),
            ("rediss://:p%40ss@h:6380", "rediss://:***@h:6380"),
            ("http://h/p@q", "http://h/p@q"),
            ("http://h/x#frag", "http://h/x"),
            ("not a url?secret=1", "not a url?***"),
            ("", ""),
        ] {
            assert_eq!(redact_url(given), shown, "{given}");
        }
    }
}
