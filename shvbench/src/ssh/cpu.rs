//! CPU time of every process on both ends of a session: the clients this process
//! started and reaped (`getrusage(RUSAGE_CHILDREN)`), plus the long-running servers
//! (sshd; our broker and agent) with the children they reaped (`/proc/PID/stat`
//! utime + stime + cutime + cstime). Per-connection server processes (sshd's session
//! process, shvrexec) count once their server has reaped them, so a reading first waits
//! until the servers have no children left.

use std::time::{Duration, Instant};

/// The servers whose CPU counts.
pub struct Cpu {
    servers: Vec<u32>,
}

/// How long a reading waits for the servers to reap their per-session children.
const SETTLE: Duration = Duration::from_secs(3);

impl Cpu {
    pub fn new(servers: Vec<u32>) -> Cpu {
        Cpu { servers }
    }

    /// The CPU time used so far by the reaped clients and the servers.
    pub async fn total(&self) -> Duration {
        let deadline = Instant::now() + SETTLE;
        while self.servers.iter().any(|p| has_children(*p)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.servers
            .iter()
            .map(|p| process_cpu(*p))
            .sum::<Duration>()
            + reaped_children()
    }
}

/// Whether any thread of `pid` has a child process.
fn has_children(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
    })
}

/// utime + stime + cutime + cstime of `pid` (zero if it is gone).
pub(crate) fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, cstime field 17.
    let ticks: u64 = (11..15)
        .filter_map(|i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// User + system time of this process's reaped children.
fn reaped_children() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reaped_busy_child_counts() {
        let cpu = Cpu::new(vec![std::process::id()]);
        let before = cpu.total().await;
        let st = tokio::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        let after = cpu.total().await;
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
