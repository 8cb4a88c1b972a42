//! Port forwarding, with ssh's syntax: `-L [BIND:]PORT:HOST:HOSTPORT` listens here and
//! connects each accepted connection to HOST:HOSTPORT as the device sees it; `-R
//! [BIND:]PORT:HOST:HOSTPORT` listens on the device and connects each connection to
//! HOST:HOSTPORT as this machine sees it. Each forward is one tunnel whose connections
//! travel as channels (`libshv::tunnel::mux`); it lives as long as this shvrsh.

use std::fmt;
use std::str::FromStr;

use libshv::tunnel::mux::{run_mux, MuxRole};
use libshv::tunnel::{CloseStatus, Forward, LaunchParams, TunnelEnd, TunnelSender};
use libshv::Client;
use tokio::task::JoinHandle;

use crate::{launch_error, Options, RshError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `-L`: listen here, connect on the device.
    Local,
    /// `-R`: listen on the device, connect here.
    Remote,
    /// `-D`: a SOCKS5 proxy here; each connection to the destination it names, as
    /// the device sees it.
    Dynamic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSpec {
    pub direction: Direction,
    /// Where the listener binds (default loopback, as ssh).
    pub bind: String,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
}

impl ForwardSpec {
    /// Parses the argument of `-L`/`-R`: `[BIND:]PORT:HOST:HOSTPORT`, IPv6 addresses in
    /// brackets.
    pub fn parse(direction: Direction, s: &str) -> Result<ForwardSpec, String> {
        let parts = split_colons(s);
        if direction == Direction::Dynamic {
            // `-D [BIND:]PORT`
            let (bind, port) = match &parts[..] {
                [port] => ("127.0.0.1".to_string(), port),
                [bind, port] if !bind.is_empty() => (bind.clone(), port),
                _ => return Err(format!("'{s}': expected [BIND:]PORT")),
            };
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("'{s}': '{port}' is not a port (1..65535)"))?;
            return Ok(ForwardSpec {
                direction,
                bind,
                port,
                host: String::new(),
                host_port: 0,
            });
        }
        let (bind, rest) = match parts.len() {
            3 => ("127.0.0.1".to_string(), &parts[..]),
            4 => (parts[0].clone(), &parts[1..]),
            _ => return Err(format!("'{s}': expected [BIND:]PORT:HOST:HOSTPORT")),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("'{s}': '{p}' is not a port (1..65535)"))
        };
        if rest[1].is_empty() || bind.is_empty() {
            return Err(format!("'{s}': empty host"));
        }
        Ok(ForwardSpec {
            direction,
            bind,
            port: port(&rest[0])?,
            host: rest[1].clone(),
            host_port: port(&rest[2])?,
        })
    }
}

/// Parses `-W`'s `HOST:PORT` (an IPv6 address in brackets).
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let parts = split_colons(s);
    match &parts[..] {
        [host, port] if !host.is_empty() => port
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .map(|p| (host.clone(), p))
            .ok_or_else(|| format!("'{s}': '{port}' is not a port (1..65535)")),
        _ => Err(format!("'{s}': expected HOST:PORT")),
    }
}

/// `-W HOST:PORT`: this process's stdin and stdout become one connection to HOST:PORT
/// as the device sees it, until either side ends it (ssh's ProxyCommand use).
pub async fn stdio(client: &Client, opts: &Options, host: &str, port: u16) -> i32 {
    let label = format!("-W {host}:{port}");
    let params = LaunchParams {
        forward: Some(Forward::Connect {
            host: host.to_string(),
            port,
        }),
        ..Default::default()
    };
    let end = match TunnelEnd::launch(client, &opts.agent_path, &params, opts.open_timeout).await {
        Ok(end) => end,
        Err(e) => {
            eprintln!(
                "shvrsh: {}",
                launch_error(client, &opts.agent_path, e).await
            );
            return crate::EXIT_FAILURE;
        }
    };
    let (sender, receiver) = end.split();
    let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let st = run_mux(
        sender.clone(),
        receiver,
        MuxRole::Stream(Box::new(stream)),
        &label,
    )
    .await;
    let _ = sender.close(&CloseStatus::ExitCode(0)).await;
    match st {
        CloseStatus::ExitCode(0) | CloseStatus::Detached => 0,
        other => {
            eprintln!("shvrsh: {label}: {other}");
            crate::EXIT_FAILURE
        }
    }
}

/// Splits at ':' outside `[...]`, dropping the brackets.
fn split_colons(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut bracket = false;
    for c in s.chars() {
        match c {
            '[' if !bracket => bracket = true,
            ']' if bracket => bracket = false,
            ':' if !bracket => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

impl fmt::Display for ForwardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = match self.direction {
            Direction::Local => "-L",
            Direction::Remote => "-R",
            Direction::Dynamic => return write!(f, "-D {}:{}", self.bind, self.port),
        };
        write!(
            f,
            "{flag} {}:{}:{}:{}",
            self.bind, self.port, self.host, self.host_port
        )
    }
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "L" => Ok(Direction::Local),
            "R" => Ok(Direction::Remote),
            "D" => Ok(Direction::Dynamic),
            _ => Err(format!("unknown direction {s}")),
        }
    }
}

/// Opens the forward's tunnel (and for `-L` its local listener first, so that a port
/// in use fails at once) and runs it in a task; the task's result is how it ended.
/// Opens the forward's tunnel and serves it in a task; returns the tunnel's sending half
/// (to close it when shvrsh is stopped) and the task, which ends with the close status.
pub async fn start(
    client: &Client,
    opts: &Options,
    spec: &ForwardSpec,
) -> Result<(TunnelSender, JoinHandle<CloseStatus>), RshError> {
    let label = spec.to_string();
    let listen = |label: &str| {
        let label = label.to_string();
        move |e: std::io::Error| {
            RshError::Forward(format!(
                "{label}: cannot listen on {}:{}: {e}",
                spec.bind, spec.port
            ))
        }
    };
    let (forward, role) = match spec.direction {
        Direction::Dynamic => {
            let l = tokio::net::TcpListener::bind((spec.bind.as_str(), spec.port))
                .await
                .map_err(listen(&label))?;
            (Forward::Dynamic, MuxRole::Socks(l))
        }
        Direction::Local => {
            let l = tokio::net::TcpListener::bind((spec.bind.as_str(), spec.port))
                .await
                .map_err(|e| {
                    RshError::Forward(format!(
                        "{label}: cannot listen on {}:{}: {e}",
                        spec.bind, spec.port
                    ))
                })?;
            let forward = Forward::Connect {
                host: spec.host.clone(),
                port: spec.host_port,
            };
            (forward, MuxRole::Accept(l))
        }
        Direction::Remote => {
            let forward = Forward::Listen {
                bind: spec.bind.clone(),
                port: spec.port,
            };
            let role = MuxRole::Connect {
                host: spec.host.clone(),
                port: spec.host_port,
            };
            (forward, role)
        }
    };
    let params = LaunchParams {
        forward: Some(forward),
        ..Default::default()
    };
    let end = TunnelEnd::launch(client, &opts.agent_path, &params, opts.open_timeout).await;
    let end = match end {
        Ok(end) => end,
        Err(e) => return Err(launch_error(client, &opts.agent_path, e).await),
    };
    let (sender, receiver) = end.split();
    let closer = sender.clone();
    let task = tokio::spawn(async move { run_mux(sender, receiver, role, &label).await });
    Ok((closer, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_forward_syntax() {
        let l = ForwardSpec::parse(Direction::Local, "8080:localhost:80").unwrap();
        assert_eq!(
            (l.bind.as_str(), l.port, l.host.as_str(), l.host_port),
            ("127.0.0.1", 8080, "localhost", 80)
        );
        let r = ForwardSpec::parse(Direction::Remote, "0.0.0.0:9000:10.0.0.5:502").unwrap();
        assert_eq!(
            (r.bind.as_str(), r.port, r.host.as_str(), r.host_port),
            ("0.0.0.0", 9000, "10.0.0.5", 502)
        );
        let v6 = ForwardSpec::parse(Direction::Local, "[::1]:8080:[fe80::1]:80").unwrap();
        assert_eq!((v6.bind.as_str(), v6.host.as_str()), ("::1", "fe80::1"));
        let d = ForwardSpec::parse(Direction::Dynamic, "1080").unwrap();
        assert_eq!((d.bind.as_str(), d.port), ("127.0.0.1", 1080));
        let d = ForwardSpec::parse(Direction::Dynamic, "[::1]:1080").unwrap();
        assert_eq!(
            (d.bind.as_str(), d.to_string().as_str()),
            ("::1", "-D ::1:1080")
        );
        for bad in ["", "x", ":1080", "1:2:3"] {
            assert!(
                ForwardSpec::parse(Direction::Dynamic, bad).is_err(),
                "{bad}"
            );
        }
        assert_eq!(parse_host_port("h:22").unwrap(), ("h".into(), 22));
        assert_eq!(parse_host_port("[::1]:22").unwrap(), ("::1".into(), 22));
        for bad in ["h", "h:0", ":22", "h:22:1"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
        for bad in [
            "8080",
            "8080:h",
            "x:h:80",
            "8080:h:0",
            "1:2:3:4:5",
            "8080::80",
        ] {
            assert!(ForwardSpec::parse(Direction::Local, bad).is_err(), "{bad}");
        }
    }
}
