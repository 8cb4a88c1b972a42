//! Silicon Heaven RPC (SHV 3) for Rust: values, frames, framing, URLs, login, an async
//! client and the tunnel helpers shared by the broker and the remote-shell tools.

pub mod access;
pub mod backoff;
pub mod client;
pub mod codec;
pub mod frame;
pub mod login;
pub mod logsafe;
pub mod message;
pub mod meta;
pub mod node;
pub mod path;
pub mod reader;
pub mod ri;
pub mod transport;
pub mod tunnel;
pub mod url;
pub mod value;
pub mod writer;

pub use client::{Client, ClientConfig, ClientError, RequestHandler};
pub use frame::RpcFrame;
pub use message::{RpcError, RpcMessage};
pub use shvproto::{self, RpcValue};
/// The old path of the Serial framing (the `tests` crate and the fuzz targets use it).
pub use transport::serial;
pub use url::RpcUrl;

/// The old path of [`transport::connection`] and [`transport::stream`], where
/// [`transport::dial`] was `connect` (the `tests` crate uses it).
pub mod connection {
    pub use crate::transport::connection::dial as connect;
    pub use crate::transport::connection::*;
    pub use crate::transport::stream::*;
}
