//! Named hosts, like ssh's `~/.ssh/config`: `shvrsh site1 test/agent` instead of the
//! URL (and its password) on every command line, where `ps` and the shell's history
//! see it.
//!
//! The file is `$SHV_CONFIG`, else `$XDG_CONFIG_HOME/shv/hosts.yaml`, else
//! `~/.config/shv/hosts.yaml`:
//!
//! ```yaml
//! hosts:
//!   site1:
//!     url: tcp://admin@broker.example.com:3755
//!     password_file: ~/.config/shv/site1.password   # or password: …, or token: …
//!     ca: ~/.config/shv/site1-ca.pem                # for ssl:// and wss://
//! ```
//!
//! As ssh does, the file is refused when others may write it, and when it holds a
//! password or token that others may read.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    hosts: BTreeMap<String, Host>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Host {
    url: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ca: Option<String>,
}

/// Where to connect: the URL to use and a password file to read, if the host names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub password_file: Option<PathBuf>,
}

/// The client config file's path (whether or not it exists).
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SHV_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("shv").join("hosts.yaml"))
}

/// `arg` as given on a command line: a URL (anything with a `:`) is used as it is; a
/// bare name is looked up in the config file.
pub fn resolve_url(arg: &str) -> anyhow::Result<Target> {
    if arg.contains(':') {
        return Ok(Target {
            url: arg.to_string(),
            password_file: None,
        });
    }
    let Some(path) = config_path() else {
        bail!("'{arg}' is neither a URL nor a named host (no HOME to find hosts.yaml in; set SHV_CONFIG)");
    };
    resolve_in(arg, &path)
}

fn resolve_in(name: &str, path: &Path) -> anyhow::Result<Target> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "'{name}' is neither a URL (tcp://HOST:PORT, unix:PATH, …) nor a named host: {} does not exist",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_yaml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?
    };
    let Some(host) = file.hosts.get(name) else {
        let known: Vec<&str> = file.hosts.keys().map(String::as_str).collect();
        bail!(
            "'{name}' is neither a URL (tcp://HOST:PORT, unix:PATH, …) nor a host in {} (it has: {})",
            path.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
    };
    let secret = file
        .hosts
        .values()
        .any(|h| h.password.is_some() || h.token.is_some());
    check_permissions(path, secret)?;
    let mut url = host.url.clone();
    let mut add = |k: &str, v: &str| {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(k);
        url.push('=');
        url.push_str(&libshv::url::query_escape(v));
    };
    if let Some(p) = &host.password {
        add("password", p);
    }
    if let Some(t) = &host.token {
        add("token", t);
    }
    if let Some(ca) = &host.ca {
        add("ca", &expand_home(ca).to_string_lossy());
    }
    Ok(Target {
        url,
        password_file: host.password_file.as_deref().map(expand_home),
    })
}

/// Refuses a config others could change (they could point a host elsewhere) or, when
/// it holds secrets, read.
fn check_permissions(path: &Path, secret: bool) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.mode() & 0o777;
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{} is owned by another user (uid {}); it must be yours",
            path.display(),
            meta.uid()
        );
    }
    if mode & 0o022 != 0 {
        bail!(
            "{} may be written by others (mode {mode:03o}); chmod go-w {}",
            path.display(),
            path.display()
        );
    }
    if secret && mode & 0o044 != 0 {
        bail!(
            "{} holds a password or token and may be read by others (mode {mode:03o}); chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("hosts.yaml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("shvtool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_named_host_becomes_its_url() {
        let d = tmpdir("named");
        let p = write(
            &d,
            "hosts:\n  site1:\n    url: tcp://admin@127.0.0.1:3755\n    password: 'p&w d'\n",
            0o600,
        );
        let t = resolve_in("site1", &p).unwrap();
        let url = libshv::RpcUrl::parse(&t.url).unwrap();
        assert_eq!(url.password.as_deref(), Some("p&w d"), "{}", t.url);
        assert_eq!(url.user, "admin");
        let e = resolve_in("site2", &p).unwrap_err().to_string();
        assert!(e.contains("it has: site1"), "{e}");
    }

    #[test]
    fn secrets_readable_by_others_are_refused() {
        let d = tmpdir("perm");
        let p = write(
            &d,
            "hosts:\n  s:\n    url: tcp://a@h:1\n    token: t\n",
            0o644,
        );
        let e = resolve_in("s", &p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let p = write(
            &d,
            "hosts:\n  s:\n    url: tcp://a@h:1\n    password_file: ~/pw\n",
            0o664,
        );
        let e = resolve_in("s", &p).unwrap_err().to_string();
        assert!(e.contains("chmod go-w"), "{e}");
        let p = write(
            &d,
            "hosts:\n  s:\n    url: tcp://a@h:1\n    password_file: /pw\n",
            0o644,
        );
        assert_eq!(
            resolve_in("s", &p).unwrap().password_file,
            Some(PathBuf::from("/pw"))
        );
    }
}
