//! The broker under test, one type with two backends: a `shvbroker` process
//! ([`Broker::start`]: its own logs, signals, restarts) or the broker in this process
//! ([`Broker::in_process`]: `Server::bind` on port 0 and `serve` with a shutdown token,
//! for tests that need no process). Readiness and ports come from the broker itself
//! (its `--ready-file`, or the bound addresses), never from its log.

use super::*;

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The port of the first `scheme://HOST:PORT[/…]` among `addresses`.
pub fn port_of(addresses: &[String], scheme: &str) -> Option<u16> {
    addresses.iter().find_map(|a| {
        let rest = a.strip_prefix(scheme)?.strip_prefix("://")?;
        let host_port = rest.split('/').next()?;
        host_port.rsplit_once(':')?.1.parse().ok()
    })
}

/// A running broker on 127.0.0.1 with an ephemeral port; stopped on Drop.
pub struct Broker {
    pub port: u16,
    /// Where it listens: one URL per listener (a process's `--ready-file`, or the
    /// in-process server's bound addresses).
    addresses: Vec<String>,
    backend: Backend,
}

enum Backend {
    /// A `shvbroker` process: killed on Drop; its stderr is kept and shown when a test
    /// fails.
    Process {
        child: Child,
        stderr: Arc<Mutex<String>>,
        dir: TempDir,
    },
    /// The broker as a library in the test's runtime: cancelled on Drop.
    InProcess {
        shutdown: tokio_util::sync::CancellationToken,
        task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    },
}

impl Broker {
    /// Starts the broker with the built-in default config (`None`) or the given YAML.
    /// The YAML's own `listen` is replaced: the harness adds `--listen tcp://127.0.0.1:0`
    /// (unless `extra` of [`Broker::start_with_args`] has a `--listen tcp://…` itself).
    pub fn start(config_yaml: Option<&str>) -> Broker {
        Self::start_with_args(config_yaml, &[])
    }

    pub fn start_with_args(config_yaml: Option<&str>, extra: &[&str]) -> Broker {
        let dir = TempDir::new("broker");
        let mut cmd = Command::new(bin("shvbroker"));
        // An ephemeral TCP port unless the caller listens on a TCP URL of its own.
        let own_tcp = extra
            .windows(2)
            .any(|w| w[0] == "--listen" && w[1].starts_with("tcp://"));
        if !own_tcp {
            cmd.arg("--listen").arg("tcp://127.0.0.1:0");
        }
        // Debug logs are kept in memory and shown when a test fails.
        if !extra.contains(&"--log") {
            let filter = std::env::var("SHV_TEST_LOG").unwrap_or_else(|_| "debug".into());
            cmd.arg("--log").arg(filter);
        }
        if let Some(yaml) = config_yaml {
            let cfg = dir.path().join("broker.yaml");
            std::fs::write(&cfg, yaml).expect("write config");
            cmd.arg("-c").arg(&cfg);
        }
        // Readiness and the chosen ports come from this file, never from the log.
        let ready = dir.path().join("ready");
        cmd.arg("--ready-file").arg(&ready);
        cmd.args(extra)
            // Keeps a default config's unix socket private to this broker.
            .env("XDG_RUNTIME_DIR", dir.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn shvbroker");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = std::io::BufReader::new(child.stderr.take().unwrap());
        let buf = stderr.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            loop {
                line.clear();
                match pipe.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                buf.lock().unwrap().push_str(&strip_ansi(&line));
            }
        });
        let deadline = std::time::Instant::now() + TIMEOUT;
        let addresses = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break text.lines().map(str::to_string).collect::<Vec<_>>();
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || std::time::Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().ok();
                // The reader thread may still be taking the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "shvbroker did not write its --ready-file (exit: {status:?}); stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let port = port_of(&addresses, "tcp").expect("the broker listens on tcp://");
        Broker {
            port,
            addresses,
            backend: Backend::Process { child, stderr, dir },
        }
    }

    /// The broker in this process from `config_yaml` (or the built-in config), on an
    /// ephemeral loopback port: `Server::bind`, then `serve` in the test's runtime. For
    /// tests that need neither the process (its log, signals) nor another runtime.
    pub async fn in_process(config_yaml: Option<&str>) -> Broker {
        use shvbroker::{config::Config, server::Server, settings::Settings};
        let mut config = match config_yaml {
            Some(yaml) => Config::parse(yaml, "test").expect("test config"),
            None => Config::default(),
        };
        config.listen = vec!["tcp://127.0.0.1:0".into()];
        let settings = Settings::new(&config).expect("valid test config");
        let server = Server::bind(settings).await.expect("bind");
        let addresses: Vec<String> = server.addresses().iter().map(|a| a.to_string()).collect();
        let port = port_of(&addresses, "tcp").expect("the broker listens on tcp://");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(server.serve(shutdown.clone()));
        Broker {
            port,
            addresses,
            backend: Backend::InProcess {
                shutdown,
                task: Some(task),
            },
        }
    }

    /// Stops an in-process broker and waits for it: Ok unless it failed internally.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match &mut self.backend {
            Backend::InProcess { shutdown, task } => {
                shutdown.cancel();
                let task = task.take().expect("stopped once");
                tokio::time::timeout(TIMEOUT, task)
                    .await
                    .expect("the broker stops")
                    .expect("the broker task")
            }
            Backend::Process { .. } => {
                let status = self.terminate();
                anyhow::ensure!(status.success(), "shvbroker exited with {status}");
                Ok(())
            }
        }
    }

    /// Is the broker still serving?
    pub fn is_running(&mut self) -> bool {
        match &mut self.backend {
            Backend::InProcess { task, .. } => task.as_ref().is_some_and(|t| !t.is_finished()),
            Backend::Process { child, .. } => child.try_wait().ok().flatten().is_none(),
        }
    }

    fn process(&self) -> (&Child, &Arc<Mutex<String>>, &TempDir) {
        match &self.backend {
            Backend::Process { child, stderr, dir } => (child, stderr, dir),
            Backend::InProcess { .. } => panic!("an in-process broker has no process"),
        }
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.backend {
            Backend::Process { child, .. } => child,
            Backend::InProcess { .. } => panic!("an in-process broker has no process"),
        }
    }

    /// The port of the broker's first `scheme://` listener.
    pub fn listen_port(&self, scheme: &str) -> u16 {
        port_of(&self.addresses, scheme).unwrap_or_else(|| {
            panic!(
                "the broker listens on no {scheme}:// ({:?})",
                self.addresses
            )
        })
    }

    /// Waits until the broker's log contains `needle` (it is read by another thread,
    /// so a line written a moment ago may not be there yet); panics after TIMEOUT.
    pub fn wait_log(&self, needle: &str) {
        self.process();
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !self.stderr().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "the broker never logged {needle:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the broker wrote to stderr so far (an in-process broker logs to the
    /// test's own output: nothing here).
    pub fn stderr(&self) -> String {
        match &self.backend {
            Backend::Process { stderr, .. } => stderr.lock().unwrap().clone(),
            Backend::InProcess { .. } => String::new(),
        }
    }

    /// The broker's private temp dir (its config lives there).
    pub fn dir(&self) -> &Path {
        self.process().2.path()
    }

    /// Panics (with the broker's stderr) if the broker has stopped.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!("the broker stopped; stderr:\n{}", self.stderr());
        }
    }

    pub fn pid(&self) -> u32 {
        self.process().0.id()
    }

    /// Sends SIGTERM and waits (at most [`TIMEOUT`]) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0, "kill -TERM");
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child().try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "shvbroker did not exit within {TIMEOUT:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `tcp://USER@127.0.0.1:PORT?password=PASSWORD`
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("tcp://{user}@127.0.0.1:{}?password={password}", self.port)
    }

    /// A libshv client config with SHA1 login and no heartbeat.
    pub fn config(&self, user: &str, password: &str) -> ClientConfig {
        let mut c = ClientConfig::from_url(RpcUrl::parse(&self.url(user, password)).unwrap());
        c.login.credentials = Credentials::Plain(password.to_string());
        c.login.use_sha1 = true;
        c.timeout = TIMEOUT;
        c.heartbeat = None;
        c
    }

    pub async fn try_connect(
        &self,
        config: &ClientConfig,
        handler: Option<Arc<dyn RequestHandler>>,
    ) -> Result<(Client, SignalReceiver), libshv::ClientError> {
        tokio::time::timeout(TIMEOUT, Client::connect(config, handler))
            .await
            .unwrap_or(Err(libshv::ClientError::Timeout(TIMEOUT)))
    }

    /// Logs `user` in with the password `user` (as the test configs have them).
    pub async fn client(&self, user: &str) -> (Client, SignalReceiver) {
        self.connect(user, user).await
    }

    /// Logs a plain client in (panics on failure).
    pub async fn connect(&self, user: &str, password: &str) -> (Client, SignalReceiver) {
        self.try_connect(&self.config(user, password), None)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "login as {user} failed: {e}\nbroker stderr:\n{}",
                    self.stderr()
                )
            })
    }

    /// A device client mounted by mount point, served by `handler`.
    pub async fn mount_device(
        &self,
        user: &str,
        password: &str,
        mount_point: &str,
        handler: Arc<dyn RequestHandler>,
    ) -> DeviceHandle {
        let mut c = self.config(user, password);
        c.login.mount_point = Some(mount_point.to_string());
        DeviceHandle::connect(c, Some(handler))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "device login at {mount_point} failed: {e}\nbroker stderr:\n{}",
                    self.stderr()
                )
            })
    }

    /// A device client mounted by device id (config `autosetup`).
    pub async fn mount_device_id(
        &self,
        user: &str,
        password: &str,
        device_id: &str,
        handler: Arc<dyn RequestHandler>,
    ) -> DeviceHandle {
        let mut c = self.config(user, password);
        c.login.device_id = Some(device_id.to_string());
        DeviceHandle::connect(c, Some(handler))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "device login with id {device_id} failed: {e}\nbroker stderr:\n{}",
                    self.stderr()
                )
            })
    }

    /// A raw TCP connection to the broker.
    pub async fn raw(&self) -> RawConn {
        RawConn::connect(self.port).await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Process { child, stderr, .. } => {
                if std::thread::panicking() {
                    let log = stderr.lock().map(|s| s.clone()).unwrap_or_default();
                    eprintln!("---- shvbroker stderr ----\n{log}---- end ----");
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Backend::InProcess { shutdown, .. } => shutdown.cancel(),
        }
    }
}
