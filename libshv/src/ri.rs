//! Resource identifiers (RI): `PATH:METHOD` or `PATH:METHOD:SIGNAL` patterns.
//!
//! Paths are globbed per segment (`*` and `?` never cross `/`, `[abc]` classes);
//! `**` matches any number of segments, so `a/**` also matches `a` itself.

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ri {
    pub path: String,
    pub method: String,
    pub signal: Option<String>,
    /// `path` split at `/`, once: matching runs for every request and every signal.
    segments: Vec<String>,
}

impl Ri {
    /// Parses an RI. A bare path is `path:*` (SHV 3 treats it as any method).
    pub fn parse(s: &str) -> Self {
        let mut parts = s.splitn(3, ':');
        let path = parts.next().unwrap_or("").to_string();
        let method = parts
            .next()
            .filter(|m| !m.is_empty())
            .unwrap_or("*")
            .to_string();
        let signal = parts.next().map(|s| {
            if s.is_empty() {
                "*".to_string()
            } else {
                s.to_string()
            }
        });
        Ri::new(path, method, signal)
    }

    /// A subscription RI as a person types it, checked: `PATH:METHOD:SIGNAL` with no
    /// blanks or control characters and balanced `[…]` classes. The broker takes any
    /// text (a bare path subscribes to nothing useful), so a typo would wait forever
    /// for signals that never match.
    pub fn parse_subscription(s: &str) -> Result<Ri, String> {
        let example = "e.g. 'test/**:*:chng' (PATH:METHOD:SIGNAL, globs allowed)";
        if s.is_empty() {
            return Err(format!("an empty RI; {example}"));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "{:?} in the RI '{}'; {example}",
                c,
                s.escape_debug()
            ));
        }
        if s.matches(':').count() != 2 {
            return Err(format!("'{s}' is not PATH:METHOD:SIGNAL; {example}"));
        }
        for part in s.split(':') {
            let mut open = false;
            for c in part.chars() {
                match c {
                    '[' if !open => open = true,
                    ']' if open => open = false,
                    '[' | ']' => return Err(format!("unbalanced [ ] in '{s}'; {example}")),
                    _ => {}
                }
            }
            if open {
                return Err(format!("unbalanced [ ] in '{s}'; {example}"));
            }
        }
        Ok(Ri::parse(s))
    }

    pub fn new(path: String, method: String, signal: Option<String>) -> Self {
        let mut segments: Vec<String> = split(&path).into_iter().map(str::to_string).collect();
        // `**/**` matches what `**` matches; a run of them would only make every match
        // walk the run.
        segments.dedup_by(|a, b| a == "**" && b == "**");
        Ri {
            path,
            method,
            signal,
            segments,
        }
    }

    /// The SHV 2 subscription `{"method": signal, "path": path}` (as the C++ broker's
    /// `.broker/app:subscribe` takes it: `path` and every path below it, `signal` by
    /// name or, empty, any; it also reads `paths`, `signal`/`methods` and `source`) as
    /// an RI. Err for a parameter that is not such a Map.
    pub fn from_shv2(param: &shvproto::RpcValue) -> Result<Ri, &'static str> {
        let shvproto::Value::Map(m) = &param.value else {
            return Err("expected {\"method\": SIGNAL, \"path\": PATH}");
        };
        let get = |k: &str| match m.get(k).map(|v| &v.value) {
            None | Some(shvproto::Value::Null) => Ok(""),
            Some(shvproto::Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err("'method' and 'path' must be Strings"),
        };
        // The C++ broker's names, in its order of preference.
        let first = |keys: &[&str]| -> Result<&str, &'static str> {
            for k in keys {
                let v = get(k)?;
                if !v.is_empty() {
                    return Ok(v);
                }
            }
            Ok("")
        };
        let path = first(&["paths", "path"])?.trim_matches('/');
        let signal = first(&["signal", "methods", "method"])?;
        let source = first(&["source"])?;
        let path = if path.is_empty() {
            "**".to_string()
        } else {
            format!("{path}/**")
        };
        let any = |s: &str| {
            if s.is_empty() {
                "*".to_string()
            } else {
                s.to_string()
            }
        };
        Ok(Ri::new(path, any(source), Some(any(signal))))
    }

    /// This RI as an SHV 2 subscription `{"method", "path"}`, for a broker that knows
    /// no other (the C++ one): the path up to its first pattern, and the signal if it
    /// is a plain name. It may cover more than the RI: the signals are matched against
    /// the RI again where they arrive.
    pub fn to_shv2(&self) -> shvproto::RpcValue {
        let wild = |s: &str| s.contains(['*', '?', '[']);
        let path: Vec<&str> = self
            .segments
            .iter()
            .map(String::as_str)
            .take_while(|s| !wild(s))
            .collect();
        let signal = match self.signal.as_deref() {
            Some(s) if !wild(s) => s,
            _ => "",
        };
        let mut m = shvproto::Map::new();
        m.insert("method".into(), shvproto::RpcValue::from(signal));
        m.insert("path".into(), shvproto::RpcValue::from(path.join("/")));
        shvproto::RpcValue::from(m)
    }

    /// Does a method call `path:method` match this (method-only) pattern?
    pub fn matches_method(&self, path: &str, method: &str) -> bool {
        glob(&self.method, method) && self.matches_path(path)
    }

    fn matches_path(&self, path: &str) -> bool {
        // Paths are short; keep their segments on the stack.
        let mut buf = [""; 32];
        let mut n = 0;
        for seg in path.split('/') {
            if n == buf.len() {
                return path_match(&self.path, path);
            }
            buf[n] = seg;
            n += 1;
        }
        let segs = if path.is_empty() {
            &buf[..0]
        } else {
            &buf[..n]
        };
        segments_match(&self.segments, segs)
    }

    /// Does a signal `path` (from `source`) named `signal` match?
    /// For subscription RIs the middle part is the source method.
    pub fn matches_signal(&self, path: &str, source: &str, signal: &str) -> bool {
        glob(self.signal.as_deref().unwrap_or("*"), signal)
            && glob(&self.method, source)
            && self.matches_path(path)
    }
}

impl Ri {
    /// The RI as seen from inside a mount point: what a sub-broker mounted at `mount`
    /// must be subscribed to so that every signal this RI matches there reaches us.
    /// None if the RI cannot match anything under `mount`.
    pub fn relative_to(&self, mount: &str) -> Option<Ri> {
        let p = self.mount_prefix(mount)?;
        Some(Ri::new(
            self.segments[p..].join("/"),
            self.method.clone(),
            self.signal.clone(),
        ))
    }

    /// Can this RI match anything under `mount`? (`relative_to` without building it:
    /// asked for every mount when subscriptions change.)
    pub fn reaches(&self, mount: &str) -> bool {
        self.mount_prefix(mount).is_some()
    }

    /// How many of this RI's path segments the mount point `mount` consumes.
    fn mount_prefix(&self, mount: &str) -> Option<usize> {
        let mut p = 0;
        for m in mount.split('/').filter(|_| !mount.is_empty()) {
            match self.segments.get(p).map(String::as_str) {
                None => return None,
                // `**` may swallow the rest of the mount point: keep it.
                Some("**") => break,
                Some(seg) if glob(seg, m) => p += 1,
                Some(_) => return None,
            }
        }
        Some(p)
    }
}

impl std::fmt::Display for Ri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.signal {
            Some(s) => write!(f, "{}:{}:{}", self.path, self.method, s),
            None => write!(f, "{}:{}", self.path, self.method),
        }
    }
}

/// Matches a path against a pattern, segment by segment.
pub fn path_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = split(pattern);
    let segs: Vec<&str> = split(path);
    segments_match(&pat, &segs)
}

fn split(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('/').collect()
    }
}

// Iterative matcher with backtracking on the last `**` (like glob's `*` over segments).
fn segments_match<P: AsRef<str>>(pat: &[P], segs: &[&str]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < segs.len() {
        if p < pat.len() && pat[p].as_ref() == "**" {
            star = Some((p, s));
            p += 1;
        } else if p < pat.len() && glob(pat[p].as_ref(), segs[s]) {
            p += 1;
            s += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p].as_ref() == "**" {
        p += 1;
    }
    p == pat.len()
}

/// fnmatch-style glob for one segment: `*`, `?`, `[abc]`, `[!a-z]`.
pub fn glob(pattern: &str, text: &str) -> bool {
    // Fast paths for the common shapes: no allocation on the routing hot path.
    if pattern == "*" {
        return true;
    }
    if !pattern.contains(['*', '?', '[']) {
        return pattern == text;
    }
    if pattern.is_ascii() && text.is_ascii() {
        // Bytes are chars here: no allocation (this runs for every subscription of
        // every peer on every signal).
        return glob_units(pattern.as_bytes(), text.as_bytes());
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_units(&p, &t)
}

/// The glob over units of text: bytes of ASCII text, or chars. Backtracks only to the
/// last `*`, so it takes at most pattern × text steps, whatever the pattern.
fn glob_units<T: Copy + Ord + From<u8>>(p: &[T], t: &[T]) -> bool {
    let star_sym = T::from(b'*');
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == star_sym {
            star = Some((pi, ti));
            pi += 1;
            continue;
        }
        if pi < p.len() {
            let (matched, next) = match_one(p, pi, t[ti]);
            if matched {
                pi = next;
                ti += 1;
                continue;
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == star_sym {
        pi += 1;
    }
    pi == p.len()
}

/// Does the pattern element at `pi` match `c`, and where does the next one start?
fn match_one<T: Copy + Ord + From<u8>>(p: &[T], pi: usize, c: T) -> (bool, usize) {
    let sym = T::from;
    if p[pi] == sym(b'?') {
        return (true, pi + 1);
    }
    if p[pi] != sym(b'[') {
        return (p[pi] == c, pi + 1);
    }
    let mut i = pi + 1;
    let negate = i < p.len() && (p[i] == sym(b'!') || p[i] == sym(b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let start = i;
    while i < p.len() && (p[i] != sym(b']') || i == start) {
        if i + 2 < p.len() && p[i + 1] == sym(b'-') && p[i + 2] != sym(b']') {
            found |= p[i] <= c && c <= p[i + 2];
            i += 3;
        } else {
            found |= p[i] == c;
            i += 1;
        }
    }
    if i >= p.len() {
        // No closing bracket: a literal '['.
        return (c == sym(b'['), pi + 1);
    }
    (found != negate, i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ris_are_checked() {
        for bad in [
            "",
            "bad ri",
            "test/**",
            "a:b",
            "a:b:c:d",
            "a[b:*:chng",
            "a:*:ch\nng",
        ] {
            assert!(Ri::parse_subscription(bad).is_err(), "{bad:?}");
        }
        for good in ["test/**:*:chng", "**:*:*", "a/[bc]?:get:", ":*:chng"] {
            assert!(Ri::parse_subscription(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn star_does_not_cross_slash() {
        assert!(path_match("a/*", "a/b"));
        assert!(!path_match("a/*", "a/b/c"));
        assert!(!path_match("*", "a/b"));
        assert!(path_match("a/*/c", "a/xyz/c"));
    }

    #[test]
    fn double_star() {
        assert!(path_match("a/**", "a"));
        assert!(path_match("a/**", "a/b/c"));
        assert!(!path_match("a/**", "ab"));
        assert!(path_match("**", ""));
        assert!(path_match("**", "x/y"));
        assert!(path_match("a/**/z", "a/z"));
        assert!(path_match("a/**/z", "a/b/c/z"));
        assert!(!path_match("a/**/z", "a/b/c/y"));
        assert!(path_match("", ""));
        assert!(!path_match("", "a"));
    }

    #[test]
    fn segment_globs() {
        assert!(glob("te?t", "test"));
        assert!(glob("*status*", "devstatusx"));
        assert!(glob("[ab]x", "bx"));
        assert!(!glob("[!ab]x", "bx"));
        assert!(glob("[a-c]1", "b1"));
        assert!(!glob("get", "getx"));
        // Non-ASCII text: `?` and classes take one char, not one byte.
        assert!(glob("te?t", "tešt"));
        assert!(glob("[šs]*", "šum"));
        assert!(!glob("te??t", "tešt"));
        assert!(glob("*ř", "zář"));
        // A run of `**` is one `**`.
        let ri = Ri::parse(&format!("{}x:*:*", "**/".repeat(300)));
        assert_eq!(ri.segments, ["**", "x"]);
        assert!(ri.matches_signal("a/b/x", "get", "chng"));
        assert!(!ri.matches_signal("a/b/y", "get", "chng"));
        assert!(Ri::parse("a/**/**").matches_method("a", "get"));
        // A pattern built to make the matcher backtrack still ends (pattern × text).
        let hostile = "*a".repeat(500) + "b";
        assert!(!glob(&hostile, &"a".repeat(600)));
        assert!(glob(&hostile, &("a".repeat(600) + "b")));
    }

    #[test]
    fn relative_to_mount() {
        let rel = |ri: &str, m: &str| Ri::parse(ri).relative_to(m).map(|r| r.to_string());
        assert_eq!(
            rel("site/dev/**:*:chng", "site").as_deref(),
            Some("dev/**:*:chng")
        );
        assert_eq!(rel("**:*:*", "site/a").as_deref(), Some("**:*:*"));
        assert_eq!(rel("*/dev:get:*", "site").as_deref(), Some("dev:get:*"));
        assert_eq!(rel("other/**:*:*", "site"), None);
        assert_eq!(rel("site:*:*", "site/a"), None);
        assert_eq!(rel("site/**:*:*", "site").as_deref(), Some("**:*:*"));
        assert_eq!(rel("**:*:*", "").as_deref(), Some("**:*:*"));
        for (ri, m) in [
            ("site/dev/**:*:chng", "site"),
            ("**:*:*", "site/a"),
            ("*/dev:get:*", "site"),
            ("other/**:*:*", "site"),
            ("site:*:*", "site/a"),
            ("site/**:*:*", "site"),
            ("s?te/**", "site/b"),
        ] {
            let ri = Ri::parse(ri);
            assert_eq!(ri.reaches(m), ri.relative_to(m).is_some(), "{ri} in {m}");
        }
    }

    #[test]
    fn ri_forms() {
        let ri = Ri::parse("test/**:get:chng");
        assert!(ri.matches_signal("test/dev/x", "get", "chng"));
        assert!(!ri.matches_signal("test/dev/x", "get", "other"));
        assert!(!ri.matches_signal("other", "get", "chng"));
        let any = Ri::parse("**:*:*");
        assert!(any.matches_signal("a/b", "get", "chng"));
        let m = Ri::parse("a/b:set");
        assert!(m.matches_method("a/b", "set"));
        assert!(!m.matches_method("a/b", "get"));
        assert_eq!(Ri::parse("x:*:*").to_string(), "x:*:*");
    }
}

#[cfg(test)]
mod shv2_tests {
    use super::*;
    use shvproto::RpcValue;

    #[test]
    fn shv2_subscriptions_read_as_ris_and_ris_as_shv2_subscriptions() {
        let p = RpcValue::from_cpon(r#"{"method":"chng","path":"test/dev"}"#).unwrap();
        let ri = Ri::from_shv2(&p).unwrap();
        assert_eq!(ri.to_string(), "test/dev/**:*:chng");
        assert!(ri.matches_signal("test/dev", "get", "chng"));
        assert!(ri.matches_signal("test/dev/a/b", "get", "chng"));
        assert!(!ri.matches_signal("test/devx", "get", "chng"));
        assert!(!ri.matches_signal("test/dev", "get", "other"));
        let any = Ri::from_shv2(&RpcValue::from_cpon(r#"{"path":""}"#).unwrap()).unwrap();
        assert_eq!(any.to_string(), "**:*:*");
        assert!(Ri::from_shv2(&RpcValue::from("x")).is_err());
        let cpp = RpcValue::from_cpon(r#"{"paths":"a","signal":"fchng","source":"get"}"#).unwrap();
        assert_eq!(Ri::from_shv2(&cpp).unwrap().to_string(), "a/**:get:fchng");
        assert!(Ri::from_shv2(&RpcValue::from_cpon(r#"{"path":1}"#).unwrap()).is_err());
        assert_eq!(
            Ri::parse("a/b/*/c:*:chng").to_shv2().to_cpon(),
            r#"{"method":"chng","path":"a/b"}"#
        );
        assert_eq!(
            Ri::parse("**:*:ch*").to_shv2().to_cpon(),
            r#"{"method":"","path":""}"#
        );
    }
}
