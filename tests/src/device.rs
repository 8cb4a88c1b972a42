//! Test devices: [`DeviceHandle`], a client a test can cut off, and [`TestDevice`], a
//! small device tree served through a [`RequestHandler`].

use super::*;
use libshv::node::{self, flag, MethodDesc, Node, Resolved};

/// A device client a test can cut off: [`DeviceHandle::disconnect`] closes its
/// connection (`Client::close`: the socket is closed when it returns), and so does Drop.
/// It runs in the test's runtime: a test must not block that runtime's thread while it
/// expects the device to answer.
pub struct DeviceHandle {
    pub client: Client,
    signals: Option<SignalReceiver>,
}

impl DeviceHandle {
    pub async fn connect(
        config: ClientConfig,
        handler: Option<Arc<dyn RequestHandler>>,
    ) -> Result<DeviceHandle, libshv::ClientError> {
        let (client, signals) = tokio::time::timeout(TIMEOUT, Client::connect(&config, handler))
            .await
            .unwrap_or(Err(libshv::ClientError::Timeout(TIMEOUT)))?;
        Ok(DeviceHandle {
            client,
            signals: Some(signals),
        })
    }

    /// The signals this client receives (can be taken once).
    pub fn take_signals(&mut self) -> SignalReceiver {
        self.signals.take().expect("signals already taken")
    }

    /// Closes the connection; returns once the socket is closed.
    pub async fn disconnect(&mut self) {
        self.client.close().await;
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        // Closing is async: the test's runtime finishes it, or ends it with the test,
        // which closes the socket as well.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            rt.spawn(async move { client.close().await });
        }
    }
}

fn meta_value(m: &RpcMessage, tag: i32) -> RpcValue {
    m.meta.get(tag).cloned().unwrap_or_else(RpcValue::null)
}

/// The test device's nodes (see [`TestDevice`]).
const ROOT_METHODS: &[MethodDesc] = &[
    node::DIR,
    node::LS,
    MethodDesc::new("echo", 0, "?", "?", level::BROWSE),
    MethodDesc::new("accessLevel", 0, "n", "i", level::BROWSE),
    MethodDesc::new("userId", 0, "n", "s", level::BROWSE),
    MethodDesc::new("callerIds", 0, "n", "i|[i]", level::BROWSE),
];
/// Answered on the root but not listed by `dir`.
const SLOW: MethodDesc = MethodDesc::new("slow", flag::NOT_IDEMPOTENT, "n", "i", level::BROWSE);
const NUMBER_METHODS: &[MethodDesc] = &[
    node::DIR,
    node::LS,
    MethodDesc::getter("get", "i", level::READ).with_signals(&[("chng", "i")]),
    MethodDesc::new("set", flag::SETTER, "i", "b", level::WRITE),
];
const APP_METHODS: &[MethodDesc] = &[
    node::DIR,
    node::LS,
    MethodDesc::getter("name", "s", level::BROWSE),
    MethodDesc::getter("shvVersionMajor", "i", level::BROWSE),
    MethodDesc::getter("shvVersionMinor", "i", level::BROWSE),
    MethodDesc::new("ping", 0, "n", "n", level::BROWSE),
];

/// A little device tree for the tests, relative to its mount point:
/// - root: `ls`, `dir`, `echo(x) → x`, `accessLevel` (the request's AccessLevel meta),
///   `userId` (UserId meta), `callerIds` (CallerIds meta), `slow` (2.5 s, counts its
///   starts in `slow_calls`)
/// - `number`: `get` (rd) → the value (42 at start), `set(x)` (wr) stores it and emits
///   `chng` with the new value
/// - `.app`: `name` → "testdevice", `shvVersionMajor` → 3, `shvVersionMinor` → 0, `ping`
///
/// Methods above the request's access level answer MethodNotFound (2).
pub struct TestDevice {
    pub number: Mutex<i64>,
    /// How many times `slow` was started.
    pub slow_calls: AtomicU64,
}

impl Default for TestDevice {
    fn default() -> Self {
        TestDevice {
            number: Mutex::new(42),
            slow_calls: AtomicU64::new(0),
        }
    }
}

impl TestDevice {
    pub fn with_number(number: i64) -> Arc<Self> {
        Arc::new(TestDevice {
            number: Mutex::new(number),
            ..Default::default()
        })
    }
}

impl TestDevice {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
}

#[async_trait::async_trait]
impl RequestHandler for TestDevice {
    async fn handle(
        &self,
        client: &Client,
        request: RpcMessage,
    ) -> Option<Result<RpcValue, RpcError>> {
        let frame = request.to_frame();
        let path = frame.shv_path().to_string();
        let method = frame.method().unwrap_or("").to_string();
        let param = request.param().cloned().unwrap_or_else(RpcValue::null);
        let node = match path.as_str() {
            "" => Node::new(ROOT_METHODS, [".app", "number"]).with_unlisted([&SLOW]),
            "number" => Node::new(NUMBER_METHODS, None::<String>),
            ".app" => Node::new(APP_METHODS, None::<String>),
            _ => return Some(Err(node::no_such_path(&path))),
        };
        let level = libshv::access::granted(&request.meta);
        match node.resolve(&path, &method, level, Some(&param)) {
            Err(e) => return Some(Err(e)),
            Ok(Resolved::Answer(v)) => return Some(Ok(v)),
            Ok(Resolved::Call(_)) => {}
        }
        match (path.as_str(), method.as_str()) {
            ("", "echo") => Some(Ok(param)),
            ("", "accessLevel") => Some(Ok(meta_value(&request, 17))),
            ("", "userId") => Some(Ok(meta_value(&request, 16))),
            ("", "callerIds") => Some(Ok(meta_value(&request, 11))),
            ("", "slow") => {
                let n = self.slow_calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Some(Ok(RpcValue::from(n as i64)))
            }
            ("number", "get") => Some(Ok(RpcValue::from(*self.number.lock().unwrap()))),
            ("number", "set") => {
                let v = match param.value {
                    Value::Int(i) => i,
                    Value::UInt(u) => u as i64,
                    _ => return Some(Err(RpcError::invalid_param("set needs an Int"))),
                };
                *self.number.lock().unwrap() = v;
                let _ = client
                    .emit("number", "chng", "get", Some(RpcValue::from(v)))
                    .await;
                Some(Ok(RpcValue::from(true)))
            }
            (".app", "name") => Some(Ok(RpcValue::from("testdevice"))),
            (".app", "shvVersionMajor") => Some(Ok(RpcValue::from(3))),
            (".app", "shvVersionMinor") => Some(Ok(RpcValue::from(0))),
            (".app", "ping") => Some(Ok(RpcValue::null())),
            _ => Some(Err(RpcError::method_not_found(format!("{path}:{method}")))),
        }
    }
}
