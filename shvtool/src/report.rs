//! One-line error reports: `TOOL: what happened: why; what to do`.
//!
//! An error's causes are joined with `: `, a cause already said by the message before
//! it is left out (`login failed: X` caused by `X` reads once), peer text is escaped
//! (an RPC error message comes from the far side), and the common mistakes get a hint.
//! Never a backtrace: these are expected errors, reported to a person.

use libshv::logsafe::shown;
use libshv::{ClientError, RpcError};

/// What kind of failure a report is about, for tools whose exit code tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The command line (or a value on it) is wrong: exit 64, as sysexits' EX_USAGE.
    Usage,
    /// The call reached its method, which answered with an RPC error: exit 1.
    Rpc,
    /// The broker could not be reached, refused the login or did not answer in time:
    /// exit 69, as sysexits' EX_UNAVAILABLE.
    Unavailable,
    /// Anything else: exit 1.
    Other,
}

/// A usage error found after the command line was parsed (a bad Cpon parameter, a
/// missing argument): reported like the others, with exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Failure {
    pub fn of(e: &anyhow::Error) -> Failure {
        for cause in e.chain() {
            if cause.downcast_ref::<UsageError>().is_some()
                || cause.downcast_ref::<libshv::url::UrlError>().is_some()
                || cause
                    .downcast_ref::<libshv::client::CommandLineError>()
                    .is_some()
            {
                return Failure::Usage;
            }
            if cause.downcast_ref::<RpcError>().is_some() {
                return Failure::Rpc;
            }
            if let Some(c) = cause.downcast_ref::<ClientError>() {
                return match c {
                    ClientError::Rpc(_) => Failure::Rpc,
                    _ => Failure::Unavailable,
                };
            }
        }
        Failure::Other
    }
}

/// The exit code for `e` under the convention above.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match Failure::of(e) {
        Failure::Usage => 64,
        Failure::Unavailable => 69,
        Failure::Rpc | Failure::Other => 1,
    }
}

/// The one line for `e` (without the tool's name).
pub fn report(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    let line = parts.join(": ");
    let mut out = shown(&line).to_string();
    if let Some(h) = hint(&line) {
        out.push_str("; ");
        out.push_str(h);
    }
    out
}

/// Prints `TOOL: report` on stderr and returns the exit code for it.
pub fn fail(tool: &str, e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("{tool}: {}", report(e));
    std::process::ExitCode::from(exit_code(e))
}

/// What to do about the usual mistakes, recognised by their messages.
fn hint(line: &str) -> Option<&'static str> {
    let l = line.to_ascii_lowercase();
    if l.contains("wrong user name or password") || l.contains("invalid login") {
        Some("check the user and the password (in the URL as ?password=…, in SHV_PASSWORD or with --password-file)")
    } else if l.contains("cpon") {
        Some("a Cpon string needs quotes the shell keeps, e.g. '\"text\"'; numbers, true, null, [..] and {..} need none")
    } else if l.contains("no response within") {
        Some("wait longer with --timeout SECONDS")
    } else if l.contains("connection refused") {
        Some("is the broker running and listening at that address?")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_said_twice_reads_once_with_a_hint() {
        let e = anyhow::Error::new(ClientError::Login(
            "Invalid login: wrong user name or password".into(),
        ))
        .context("login failed: Invalid login: wrong user name or password")
        .context("shvagent");
        let r = report(&e);
        assert_eq!(r.matches("wrong user name or password").count(), 1, "{r}");
        assert!(r.contains("SHV_PASSWORD"), "{r}");
        assert_eq!(exit_code(&e), 69);
    }

    #[test]
    fn peer_text_is_escaped_and_rpc_errors_exit_1() {
        let e = anyhow::Error::new(ClientError::Rpc(RpcError::new(3, "denied\n\x1b[2Jforged")));
        let r = report(&e);
        assert!(!r.contains('\n') && !r.contains('\x1b'), "{r}");
        assert_eq!(exit_code(&e), 1);
        let u = anyhow::Error::new(UsageError("PATH and METHOD are required".into()));
        assert_eq!(exit_code(&u), 64);
    }
}
