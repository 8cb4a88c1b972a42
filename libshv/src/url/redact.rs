//! URLs as they may be shown: secrets masked in any text (also text that does not
//! parse), or left out of a parsed URL so that it still parses back to the same place.

use super::RpcUrl;
impl RpcUrl {
    /// The URL with every option but its secrets (`password`, `shapass`, `token`): what
    /// may go on a command line or into a log, and parses back to the same transport.
    pub fn without_secrets(&self) -> String {
        let Some(t) = &self.transport else {
            return self.to_string();
        };
        let mut s = t.to_string();
        let mut q: Vec<String> = Vec::new();
        if !self.user.is_empty() {
            match s.split_once("://") {
                Some((scheme, rest)) => {
                    s = format!("{scheme}://{}@{rest}", query_escape(&self.user))
                }
                None => q.push(format!("user={}", query_escape(&self.user))),
            }
        }
        if let Some(tls) = &t.tls {
            for (k, v) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", query_escape(v)));
                }
            }
            if let Some(v) = tls.verify {
                q.push(format!("verify={v}"));
            }
        }
        for (k, v) in [("devid", &self.device_id), ("devmount", &self.mount_point)] {
            if let Some(v) = v {
                q.push(format!("{k}={}", query_escape(v)));
            }
        }
        if !q.is_empty() {
            s.push(if s.contains('?') { '&' } else { '?' });
            s.push_str(&q.join("&"));
        }
        s
    }
}
/// The URL text with every secret masked: the password of `user:password@`, and the
/// values of the `password`, `shapass` and `token` options. Works on text that does not
/// parse as a URL too, since it is used for error messages about such text.
pub fn redact(s: &str) -> String {
    // Options that are never secret; every other option's value is masked (also one
    // spelled in percent-escapes, which `parse` would decode into `password`).
    const PLAIN: [&str; 8] = [
        "user", "devid", "devmount", "ca", "cert", "key", "verify", "baudrate",
    ];
    let (head, query) = match s.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (s, None),
    };
    let mut out = head.to_string();
    // user:password@host — the password may hold '/', '?' or '@': mask up to the
    // last '@' (more than the password at worst, never less).
    // The user info starts after `scheme://`; in a malformed URL (`tcp:/a:pw@h`,
    // `a:pw@h`) after `scheme:` and its slashes, or at the start when that leaves no
    // colon before the '@' (the "scheme" was the user).
    let auth = match s.find("://") {
        Some(scheme_end) => Some(scheme_end + 3),
        None => s.find(':').map(|c| {
            let after = c + 1 + s[c + 1..].bytes().take_while(|b| *b == b'/').count();
            match s.rfind('@') {
                Some(at) if at > after && !s[after..at].contains(':') => 0,
                _ => after,
            }
        }),
    };
    if let Some(auth) = auth {
        if let Some(at) = s.rfind('@').filter(|at| *at > auth) {
            if let Some(colon) = s[auth..at].find(':') {
                let mut masked = s[..auth + colon + 1].to_string();
                masked.push_str("***");
                masked.push_str(&s[at..]);
                return redact_query(&masked[..], &PLAIN);
            }
        }
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(&mask_query(q, &PLAIN));
    }
    out
}

fn redact_query(s: &str, plain: &[&str]) -> String {
    match s.split_once('?') {
        Some((h, q)) => format!("{h}?{}", mask_query(q, plain)),
        None => s.to_string(),
    }
}

fn mask_query(q: &str, plain: &[&str]) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if !plain.contains(&k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A URL query value, percent-encoded as `parse` decodes it (`&`, `=`, `%`, spaces…).
pub fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_errors_never_show_the_password() {
        for bad in [
            "tcp://admin@127.0.0.1:3755?password=hunter2&bogus=1",
            "tcp://admin:hunter2@127.0.0.1:99999",
            "tcp://admin@h?shapass=hunter2&token=hunter2&x",
            "ftp://admin:hunter2@h",
            "tcp://admin@h?pass%77ord=hunter2&bogus=1",
            "tcp://a:hun?ter2@h:99999",
            "tcp:/admin:hunter2@h:1",
            "tcp:/admin@h:1?password=hunter2",
            "admin:hunter2@h",
        ] {
            let e = RpcUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert_eq!(
            redact("tcp://a:pw@h:1?password=x&devid=d"),
            "tcp://a:***@h:1?password=***&devid=d"
        );
        assert_eq!(redact("tcp://a:p/w?x@h"), "tcp://a:***@h");
    }

    #[test]
    fn without_secrets_keeps_every_other_option() {
        for url in [
            "ssl://admin@h:1?password=pw&ca=/etc/my%20ca.pem&verify=false&devmount=test/a",
            "unix:/run/s?user=u&password=pw&devid=d",
            "serial:/dev/ttyS0?baudrate=9600&user=u&token=pw",
            "wss://u@h:443/shv?shapass=pw&cert=c.pem&key=k.pem",
        ] {
            let u = RpcUrl::parse(url).unwrap();
            let shown = u.without_secrets();
            assert!(!shown.contains("pw"), "{shown}");
            let back = RpcUrl::parse(&shown).unwrap();
            assert_eq!(back.transport(), u.transport(), "{shown}");
            assert_eq!(
                (back.user, back.device_id, back.mount_point),
                (u.user, u.device_id, u.mount_point),
                "{shown}"
            );
        }
    }
}
