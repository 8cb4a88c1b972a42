//! shvcp: files to and from devices over a tunnel (`libshv::tunnel::copy`): a
//! download launches `copyOut` and extracts the tar stream that comes back; an upload
//! launches `copyIn` and sends one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use libshv::tunnel::copy::{self, ChannelReader, ChannelWriter};
use libshv::tunnel::{CloseStatus, Control, FileCopy, LaunchParams, TunnelEnd, TunnelEvent};
use libshv::{Client, ClientConfig};

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote { agent: String, path: String },
}

impl Location {
    /// `AGENT_PATH:/path` is remote; a path starting with `/`, `./` or `../`, or with
    /// no colon, is local.
    pub fn parse(s: &str) -> Location {
        let local = s.starts_with('/') || s.starts_with("./") || s.starts_with("../");
        match s.split_once(':') {
            Some((agent, path)) if !local && !agent.is_empty() => Location::Remote {
                agent: agent.trim_matches('/').to_string(),
                path: if path.is_empty() {
                    ".".into()
                } else {
                    path.into()
                },
            },
            _ => Location::Local(PathBuf::from(s)),
        }
    }
}

pub enum Direction {
    Download {
        agent: String,
        sources: Vec<String>,
        dest: PathBuf,
    },
    Upload {
        sources: Vec<PathBuf>,
        agent: String,
        dest: String,
    },
}

pub struct Request {
    pub config: ClientConfig,
    pub direction: Direction,
    pub recursive: bool,
    pub preserve: bool,
    pub open_timeout: Duration,
    pub progress: bool,
}

impl Request {
    pub fn new(
        config: ClientConfig,
        paths: &[String],
        recursive: bool,
        preserve: bool,
        open_timeout: Duration,
        quiet: bool,
    ) -> anyhow::Result<Request> {
        let (dst, srcs) = paths.split_last().context("give SRC… DST")?;
        let srcs: Vec<Location> = srcs.iter().map(|s| Location::parse(s)).collect();
        let direction = match Location::parse(dst) {
            Location::Local(dest) => {
                let mut agent = None;
                let mut sources = Vec::new();
                for s in srcs {
                    let Location::Remote { agent: a, path } = s else {
                        bail!("both sides are local: use cp");
                    };
                    if agent.get_or_insert_with(|| a.clone()) != &a {
                        bail!("all remote sources must be on one agent");
                    }
                    sources.push(path);
                }
                // As scp: checked before anything is copied. Several sources, or a
                // DST written as `DST/`, need an existing directory.
                copy::check_destination(&dest, dst.ends_with('/') || sources.len() > 1)?;
                Direction::Download {
                    agent: agent.context("no source")?,
                    sources,
                    dest,
                }
            }
            Location::Remote { agent, path } => {
                let sources = srcs
                    .into_iter()
                    .map(|s| match s {
                        Location::Local(p) => Ok(p),
                        Location::Remote { .. } => {
                            bail!("copying from one device to another is not supported")
                        }
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                // Several sources go into a directory: the trailing `/` makes the
                // device refuse, before writing anything, a DST that is not one.
                let dest = if sources.len() > 1 && !path.ends_with('/') {
                    format!("{path}/")
                } else {
                    path
                };
                Direction::Upload {
                    sources,
                    agent,
                    dest,
                }
            }
        };
        Ok(Request {
            config,
            direction,
            recursive,
            preserve,
            open_timeout,
            progress: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        })
    }
}

fn bar(progress: bool, total: Option<u64>) -> indicatif::ProgressBar {
    if !progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    set_total(&bar, total);
    bar
}

/// Total, percentage, rate and ETA once the total is known (an upload knows it at
/// once; a download when the device sends it, before the data).
fn set_total(bar: &indicatif::ProgressBar, total: Option<u64>) {
    let template = match total {
        Some(t) => {
            bar.set_length(t);
            "{bytes}/{total_bytes} {percent:>3}% {wide_bar} {bytes_per_sec} ETA {eta}"
        }
        None => "{spinner} {bytes} {bytes_per_sec}",
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
}

/// Resolves when the user interrupts the copy (Ctrl-C, SIGTERM, SIGHUP): the copy then
/// stops and removes what it had half written, instead of dying with a temporary file
/// left behind.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = recv(&mut int) => "interrupted",
        _ = recv(&mut term) => "terminated",
        _ = recv(&mut hup) => "hung up",
    }
}

/// The error of a copy the user stopped (exit status 130, as a shell's for ^C).
#[derive(Debug, thiserror::Error)]
#[error("{0}: nothing half-written was kept")]
pub struct Interrupted(pub &'static str);

async fn open(req: &Request, agent: &str, copy: FileCopy) -> anyhow::Result<(Client, TunnelEnd)> {
    let (client, _signals) = Client::connect(&req.config, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let params = LaunchParams {
        copy: Some(copy),
        ..Default::default()
    };
    match TunnelEnd::launch(&client, agent, &params, req.open_timeout).await {
        Ok(end) => Ok((client, end)),
        Err(e) => Err(anyhow::anyhow!(
            "{}",
            shvtool::launch_error(&client, agent, e).await
        )),
    }
}

/// Runs the copy.
pub async fn run(req: Request) -> anyhow::Result<()> {
    match &req.direction {
        Direction::Download {
            agent,
            sources,
            dest,
        } => download(&req, agent, sources, dest).await,
        Direction::Upload {
            sources,
            agent,
            dest,
        } => upload(&req, sources, agent, dest).await,
    }
}

async fn download(
    req: &Request,
    agent: &str,
    sources: &[String],
    dest: &Path,
) -> anyhow::Result<()> {
    let copy = FileCopy::Out {
        paths: sources.to_vec(),
        recursive: req.recursive,
    };
    let (_client, end) = open(req, agent, copy).await?;
    let (_sender, mut receiver) = end.split();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let (dest_owned, preserve) = (dest.to_path_buf(), req.preserve);
    let extractor = tokio::task::spawn_blocking(move || {
        copy::extract(ChannelReader::new(rx), &dest_owned, preserve)
    });
    let progress = bar(req.progress, None);
    let mut tx = Some(tx);
    let stop = interrupted();
    tokio::pin!(stop);
    let status = loop {
        let ev = tokio::select! {
            ev = receiver.recv() => ev,
            why = &mut stop => {
                progress.finish_and_clear();
                // The extractor sees the stream end mid-file and removes its
                // temporary file; the tunnel goes with the connection.
                drop(tx);
                let _ = extractor.await;
                return Err(Interrupted(why).into());
            }
        };
        match ev {
            Some(TunnelEvent::Control(Control::Total(t))) => set_total(&progress, Some(t)),
            Some(TunnelEvent::Data { channel: 1, data }) => {
                progress.inc(data.len() as u64);
                if let Some(t) = &tx {
                    // The extractor stopped (an error): its reason is the one to show.
                    if t.send(data).await.is_err() {
                        tx = None;
                    }
                }
            }
            Some(TunnelEvent::Closed(st)) => break st,
            None => break CloseStatus::Error("tunnel closed".into()),
            Some(_) => {}
        }
    };
    progress.finish_and_clear();
    match status {
        // Everything arrived: the end of the stream is the end of the extraction.
        CloseStatus::ExitCode(0) => {
            drop(tx);
            extractor.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        }
        // The device could not send (a missing file): say so, not that the stream
        // broke; the extractor, cut short, removes what it had half written.
        CloseStatus::Error(e) => {
            drop(tx);
            let _ = extractor.await;
            bail!("{agent}:{e}")
        }
        other => {
            drop(tx);
            let _ = extractor.await;
            bail!("{agent}: copy ended with {other}")
        }
    }
}

async fn upload(req: &Request, sources: &[PathBuf], agent: &str, dest: &str) -> anyhow::Result<()> {
    // Missing sources fail before anything is sent.
    let total = copy::check_sources(sources, req.recursive).map_err(|e| anyhow::anyhow!("{e}"))?;
    let copy = FileCopy::In {
        dest: dest.to_string(),
        preserve: req.preserve,
    };
    let (_client, end) = open(req, agent, copy).await?;
    let (sender, mut receiver) = end.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (srcs, recursive) = (sources.to_vec(), req.recursive);
    let archiver = tokio::task::spawn_blocking(move || {
        copy::archive(&srcs, recursive, ChannelWriter::new(tx))
    });
    let progress = bar(req.progress, Some(total));
    let mut early = None;
    let stop = interrupted();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            // The device, cut short, removes what it had half written.
            why = &mut stop => {
                progress.finish_and_clear();
                return Err(Interrupted(why).into());
            }
            chunk = rx.recv() => match chunk {
                Some(c) => {
                    progress.inc(c.len() as u64);
                    if sender.send_data(0, &c).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            // The device may give up early (no such directory, a full disk).
            ev = receiver.recv() => match ev {
                Some(TunnelEvent::Closed(st)) => {
                    early = Some(st);
                    break;
                }
                None => {
                    early = Some(CloseStatus::Error("tunnel closed".into()));
                    break;
                }
                Some(_) => {}
            },
        }
    }
    progress.finish_and_clear();
    drop(rx);
    let archived = archiver.await?;
    let status = match early {
        Some(st) => st,
        None => {
            archived.map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ = sender.send_control(Control::Eof).await;
            loop {
                match receiver.recv().await {
                    Some(TunnelEvent::Closed(st)) => break st,
                    None => break CloseStatus::Error("tunnel closed".into()),
                    Some(_) => {}
                }
            }
        }
    };
    match status {
        CloseStatus::ExitCode(0) => Ok(()),
        CloseStatus::Error(e) => bail!("{agent}:{e}"),
        other => bail!("{agent}: copy ended with {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_and_local_locations() {
        assert_eq!(
            Location::parse("test/agent:/etc/hosts"),
            Location::Remote {
                agent: "test/agent".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(
            Location::parse("./a:b"),
            Location::Local(PathBuf::from("./a:b"))
        );
        assert_eq!(
            Location::parse("/x:y"),
            Location::Local(PathBuf::from("/x:y"))
        );
        assert_eq!(
            Location::parse("file"),
            Location::Local(PathBuf::from("file"))
        );
        assert_eq!(
            Location::parse("dev:"),
            Location::Remote {
                agent: "dev".into(),
                path: ".".into()
            }
        );
    }
}
