//! Local stdin, read from the very start so that keystrokes typed while the tunnel
//! opens are buffered (they are sent once it is open). `None` = EOF.
//!
//! Where the kernel can poll stdin (a terminal, a pipe, a socket), a task of the
//! runtime reads it when epoll says it is readable: a keystroke then crosses shvrsh in
//! one thread, with no hand-off from a reader thread (a wake-up, often on the other
//! CPU). stdin stays in blocking mode, as ssh leaves a terminal: its file description is
//! usually shared with stdout and with the shell that started us, and O_NONBLOCK there
//! would make their writes fail. So each read is one read(2) after readiness, and the
//! readiness is cleared only when FIONREAD says nothing is left. Regular files and
//! /dev/null cannot be polled; they are read by a thread.
//!
//! Bounded, so that piping a large file in does not fill memory faster than the tunnel
//! drains it: the reader then waits and the kernel holds the rest.

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

/// Bytes per read: a paste or a piped file moves in large pieces.
const READ_SIZE: usize = 64 * 1024;

/// Chunks that may wait for the tunnel.
const QUEUE: usize = 64;

/// Starts reading stdin (must be called inside the runtime).
pub fn spawn_stdin_reader() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    // SAFETY: fd 0 stays open for the life of the process; the AsyncFd holds only the
    // number (Stdin0 never closes it).
    match unsafe { AsyncFd::register(Stdin0) } {
        Ok(fd) => {
            tokio::spawn(read_polled(fd, tx));
        }
        // EPERM: a regular file or /dev/null, which epoll does not take.
        Err(_) => {
            std::thread::spawn(move || read_blocking(tx));
        }
    }
    rx
}

/// File descriptor 0, borrowed for the life of the process.
struct Stdin0;

impl AsRawFd for Stdin0 {
    fn as_raw_fd(&self) -> RawFd {
        0
    }
}

/// Bytes that can be read from `fd` without blocking (0 if it cannot tell).
fn pending(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD as _, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

async fn read_polled(fd: AsyncFd<Stdin0>, tx: mpsc::Sender<Option<Vec<u8>>>) {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let Ok(mut ready) = fd.readable().await else {
            let _ = tx.send(None).await;
            return;
        };
        // SAFETY: fd 0 is open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        match nix::unistd::read(stdin, &mut buf) {
            Ok(0) => {
                let _ = tx.send(None).await;
                return;
            }
            Ok(n) => {
                if pending(0) == 0 {
                    ready.clear_ready();
                }
                drop(ready);
                if tx.send(Some(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            // Someone else took the bytes (or stdin is non-blocking after all).
            Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
            Err(_) => {
                let _ = tx.send(None).await;
                return;
            }
        }
    }
}

fn read_blocking(tx: mpsc::Sender<Option<Vec<u8>>>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => {
                let _ = tx.blocking_send(None);
                break;
            }
            Ok(n) => {
                if tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                let _ = tx.blocking_send(None);
                break;
            }
        }
    }
}
