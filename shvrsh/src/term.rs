//! The local terminal: raw mode that is restored on every exit path, and its size.
//!
//! Uses `nix` termios (the same crate shvrexec uses for PTYs) rather than crossterm:
//! we need only cfmakeraw/tcsetattr and TIOCGWINSZ, not a TUI toolkit.

use std::io::IsTerminal;
use std::sync::Mutex;

use nix::sys::termios::{self, SetArg, Termios};

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// The settings before raw mode, kept as the plain libc struct so that it can live in a
/// static and be restored from a panic hook.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// Switches stdin's terminal to raw mode (no echo, no line editing, no signals from
/// ^C/^Z: they go to the remote PTY) and arranges for it to be restored on panic.
pub fn set_raw() -> nix::Result<()> {
    let stdin = std::io::stdin();
    let orig = termios::tcgetattr(&stdin)?;
    let mut raw: Termios = orig.clone();
    termios::cfmakeraw(&mut raw);
    *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(orig.into());
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        prev(info);
    }));
    // TCSANOW keeps the keystrokes already typed (TCSAFLUSH would drop them).
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
}

/// Restores the terminal if `set_raw` changed it; safe to call any number of times.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &Termios::from(t));
    }
}

/// (cols, rows) of the terminal on stdout, else stdin, else stderr.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [1, 0, 2] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into a live struct.
        if unsafe { tiocgwinsz(fd, &mut ws) }.is_ok() && ws.ws_col > 0 && ws.ws_row > 0 {
            return Some((ws.ws_col, ws.ws_row));
        }
    }
    None
}
