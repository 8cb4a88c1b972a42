//! The near misses a lenient parser would take for something else, refused with what
//! was probably meant.

use super::redact;
/// Schemes whose URL names a host (`SCHEME://HOST[:PORT]`).
const NETWORK_SCHEMES: [&str; 6] = ["tcp", "ssl", "tcps", "ssls", "ws", "wss"];
/// Schemes whose URL names a local path (`SCHEME:PATH`).
const LOCAL_SCHEMES: [&str; 5] = ["unix", "unixs", "localsocket", "serial", "tty"];

/// Refuses the near misses a lenient parser would take for something else: a missing
/// scheme, `tcp:/host` (read as a path, so the client dialled localhost:3755) and a
/// network URL without a host. Each message says what was probably meant.
pub(super) fn check_shape(s: &str) -> Result<(), String> {
    // The suggestion repeats the URL, so it is redacted like the rest of the message.
    let hint_tcp = |rest: &str| {
        format!(
            "no scheme; did you mean {}?",
            redact(&format!("tcp://{}", rest.trim_start_matches('/')))
        )
    };
    let Some((scheme, rest)) = s.split_once(':') else {
        return Err(hint_tcp(s));
    };
    let scheme_lc = scheme.to_ascii_lowercase();
    if NETWORK_SCHEMES.contains(&scheme_lc.as_str()) {
        let Some(authority) = rest.strip_prefix("//") else {
            return Err(format!(
                "{scheme}: must be followed by //; did you mean {}?",
                redact(&format!("{scheme}://{}", rest.trim_start_matches('/')))
            ));
        };
        // The host sits after any `user[:password]@` and before `:port`, `/`, `?`.
        let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() || host.starts_with(':') {
            return Err(format!(
                "no host; did you mean {scheme}://127.0.0.1{}?",
                host
            ));
        }
        return Ok(());
    }
    if LOCAL_SCHEMES.contains(&scheme_lc.as_str()) {
        return Ok(());
    }
    // `127.0.0.1:3755`, `localhost:3755`, `broker.example:3755`: a host and port.
    let looks_like_host = scheme.contains('.')
        || scheme.eq_ignore_ascii_case("localhost")
        || (!rest.is_empty()
            && rest
                .split(['/', '?'])
                .next()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty()));
    if looks_like_host {
        return Err(hint_tcp(s));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::url::{RpcUrl, UrlError};

    #[test]
    fn near_miss_urls_are_refused_with_a_hint() {
        for (url, hint) in [
            (
                "tcp:/127.0.0.1:41755",
                "did you mean tcp://127.0.0.1:41755?",
            ),
            ("tcp:127.0.0.1:41755", "did you mean tcp://127.0.0.1:41755?"),
            ("127.0.0.1:3755", "did you mean tcp://127.0.0.1:3755?"),
            ("localhost:3755", "did you mean tcp://localhost:3755?"),
            ("127.0.0.1", "did you mean tcp://127.0.0.1?"),
            ("tcp://", "no host"),
            ("tcp://admin@", "no host"),
            ("tcp://admin@:3755", "no host"),
            ("ssl:/h:1", "did you mean ssl://h:1?"),
        ] {
            let e = RpcUrl::parse(url).unwrap_err().to_string();
            assert!(e.contains(hint), "{url}: {e}");
        }
        for good in [
            "tcp://127.0.0.1:1",
            "TCP://h",
            "unix:/run/x.sock",
            "unix:rel.sock",
            "serial:/dev/ttyS0",
            "ws://h/shv",
            "tcp://[::1]:1",
        ] {
            assert!(RpcUrl::parse(good).is_ok(), "{good}");
        }
        assert!(matches!(RpcUrl::parse("ftp://h"), Err(UrlError::Scheme(_))));
    }
}
