//! Peer-supplied text in logs: truncated and escaped, so that a hostile peer can neither
//! fill the disk with one log line nor forge log lines of its own (a user name with a
//! `\n` in it, terminal escape sequences, …). And events a peer can repeat at will,
//! logged once per burst ([`Burst`]), so that it cannot fill the disk with many lines
//! either.

use std::fmt;

/// How many bytes of a peer's string a log line shows.
pub const LOG_LIMIT: usize = 256;

/// Displays a string truncated to [`LOG_LIMIT`] bytes with control characters, quotes
/// and backslashes escaped; a cut is marked with `…(N bytes)`.
pub struct Shown<'a>(pub &'a str);

/// Wraps peer data for a log line: `tracing::info!(user = %shown(&name), …)`.
pub fn shown(s: &str) -> Shown<'_> {
    Shown(s)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut end = s.len().min(LOG_LIMIT);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        for c in s[..end].chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() || is_format_trap(c) => write!(f, "{}", c.escape_default())?,
                c => write!(f, "{c}")?,
            }
        }
        if end < s.len() {
            write!(f, "…({} bytes)", s.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Characters that reorder or hide text on a terminal (bidi overrides and isolates,
/// line and paragraph separators).
fn is_format_trap(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Occurrences of one kind of event, to be logged at most once per [`Burst::WINDOW`]
/// with their count.
#[derive(Debug, Default)]
pub struct Burst {
    count: u64,
    last_log: Option<std::time::Instant>,
}

impl Burst {
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    pub const fn new() -> Burst {
        Burst {
            count: 0,
            last_log: None,
        }
    }

    /// Counts one occurrence; Some(occurrences since the last line) when a line is due.
    pub fn note(&mut self) -> Option<u64> {
        self.count += 1;
        let due = self.last_log.is_none_or(|t| t.elapsed() >= Self::WINDOW);
        if !due {
            return None;
        }
        self.last_log = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_is_one_line_with_its_count() {
        let mut b = Burst::default();
        assert_eq!(b.note(), Some(1));
        for _ in 0..999 {
            assert_eq!(b.note(), None);
        }
        b.last_log = Some(std::time::Instant::now() - Burst::WINDOW);
        assert_eq!(b.note(), Some(1000));
    }

    use super::*;

    #[test]
    fn escapes_control_characters() {
        let s = shown("evil\nINFO forged line\x1b[31m").to_string();
        assert!(!s.contains('\n') && !s.contains('\x1b'), "{s}");
        assert!(s.starts_with("evil\\nINFO forged"), "{s}");
        let s = shown("a\u{202e}b").to_string();
        assert!(!s.contains('\u{202e}'), "{s}");
    }

    #[test]
    fn truncates_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let s = shown(&long).to_string();
        assert!(s.len() < LOG_LIMIT + 32, "{}", s.len());
        assert!(s.ends_with("…(2000 bytes)"), "{s}");
        assert_eq!(shown("short").to_string(), "short");
    }
}
