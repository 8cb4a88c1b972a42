//! The broker in process, through its own seam: [`Server::bind`] on port 0, `serve`
//! with a shutdown token, and libshv clients over real loopback sockets.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use libshv::client::{Client, ClientConfig, RequestHandler, SignalReceiver};
use libshv::login::Credentials;
use libshv::message::{RpcError, RpcMessage};
use libshv::{RpcUrl, RpcValue};
use shvbroker::config::Config;
use shvbroker::server::Server;
use shvbroker::settings::Settings;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Users admin (su), device (may mount under test/**), viewer (read everywhere).
pub const CONFIG: &str = "name: inproc
users:
  admin: {password: admin, roles: [admin]}
  device: {password: device, roles: [device]}
  viewer: {password: viewer, roles: [viewer]}
roles:
  admin: {access: [{ri: '**:*', grant: su}], mount_points: ['**']}
  device: {access: [{ri: '**:*', grant: rd}], mount_points: ['test/**']}
  viewer: {access: [{ri: '**:*', grant: rd}]}
";

pub struct TestBroker {
    pub port: u16,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        Self::with_config(CONFIG).await
    }

    /// A broker from `yaml`, listening on a free loopback port.
    pub async fn with_config(yaml: &str) -> TestBroker {
        let mut config = Config::parse(yaml, "test").expect("test config");
        config.listen = vec!["tcp://127.0.0.1:0".into()];
        let settings = Settings::new(&config).expect("valid test config");
        let server = Server::bind(settings).await.expect("bind");
        let port = server.tcp_port().expect("a TCP port");
        assert_eq!(
            server.addresses()[0].to_string(),
            format!("tcp://127.0.0.1:{port}")
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(shutdown.clone()));
        TestBroker {
            port,
            shutdown,
            task,
        }
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!("tcp://{user}@127.0.0.1:{}?password={password}", self.port)
    }

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

    pub async fn client(&self, user: &str) -> (Client, SignalReceiver) {
        self.try_connect(&self.config(user, user), None)
            .await
            .unwrap_or_else(|e| panic!("login as {user}: {e}"))
    }

    /// A device mounted at `mount` answering with [`Echo`].
    pub async fn device(&self, mount: &str) -> (Client, SignalReceiver) {
        let mut c = self.config("device", "device");
        c.login.mount_point = Some(mount.into());
        self.try_connect(&c, Some(Arc::new(Echo)))
            .await
            .unwrap_or_else(|e| panic!("device at {mount}: {e}"))
    }

    /// Stops the broker and waits for it; Ok unless it failed internally.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("broker stops")
            .expect("broker task")
    }

    /// Is the broker still serving (its task not ended)?
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// A device: `echo` returns its parameter, `whoami` what the broker told it about the
/// caller (UserId, AccessLevel), `ls` lists `echo` and `whoami` under the root.
pub struct Echo;

#[async_trait::async_trait]
impl RequestHandler for Echo {
    async fn handle(&self, _c: &Client, req: RpcMessage) -> Option<Result<RpcValue, RpcError>> {
        let f = req.to_frame();
        let method = f.method().unwrap_or("").to_string();
        let path = f.shv_path().to_string();
        Some(match (path.as_str(), method.as_str()) {
            ("", "ls") => Ok(RpcValue::from(vec![RpcValue::from("node")])),
            (_, "echo") => Ok(req.param().cloned().unwrap_or_else(RpcValue::null)),
            (_, "whoami") => {
                let mut m = shvproto::Map::new();
                m.insert("path".into(), RpcValue::from(path.as_str()));
                m.insert("userId".into(), RpcValue::from(&*f.user_id()));
                m.insert(
                    "accessLevel".into(),
                    RpcValue::from(f.access_level().unwrap_or(-1)),
                );
                Ok(RpcValue::from(m))
            }
            _ => Err(RpcError::method_not_found(format!("{path}:{method}"))),
        })
    }
}

/// The next signal within [`TIMEOUT`] whose path is `path`.
pub async fn signal_on(rx: &mut SignalReceiver, path: &str) -> RpcMessage {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let m = rx.recv().await.expect("signal channel open");
            if m.to_frame().shv_path() == path {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no signal on {path}"))
}

/// The client id the broker gave `client`.
pub async fn client_id(client: &Client) -> i64 {
    client
        .call(".broker/currentClient", "info", None)
        .await
        .expect("currentClient:info")
        .get("clientId")
        .expect("clientId")
        .as_int()
}

pub fn strings(v: &RpcValue) -> Vec<String> {
    match &v.value {
        shvproto::Value::List(l) => l.iter().map(|x| x.as_str().to_string()).collect(),
        _ => panic!("not a list: {}", v.to_cpon()),
    }
}

pub fn error_code(r: Result<RpcValue, libshv::ClientError>) -> i64 {
    match r {
        Err(libshv::ClientError::Rpc(e)) => e.code,
        other => panic!("expected an RPC error, got {other:?}"),
    }
}
