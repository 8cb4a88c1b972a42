//! Silicon Heaven RPC (SHV 3) for Rust: values, frames, framing, URLs, login, an async
//! client and the tunnel helpers shared by the broker and the remote-shell tools.

pub mod access;
pub mod backoff;
pub mod client;
pub mod codec;
pub mod connection;
pub mod frame;
pub mod login;
pub mod logsafe;
pub mod message;
pub mod meta;
pub mod node;
pub mod path;
pub mod reader;
pub mod ri;
pub mod serial;
pub mod tls;
pub mod tunnel;
pub mod url;
pub mod value;
pub mod writer;
pub mod ws;

pub use client::{Client, ClientConfig, ClientError, RequestHandler};
pub use frame::RpcFrame;
pub use message::{RpcError, RpcMessage};
pub use shvproto::{self, RpcValue};
pub use url::RpcUrl;
