//! Silicon Heaven RPC (SHV 3) for Rust: values, frames, framing, URLs, login, an async
//! client and the tunnel helpers shared by the broker and the remote-shell tools.
//!
//! Cargo features (all on by default) choose what is linked: `tls`, `ws`, `serial` (serial
//! lines), `tunnel` and `copy` (shvcp's stream). A URL whose transport was left out is
//! refused when dialled or bound, with an error naming the feature.

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
#[cfg(feature = "tunnel")]
pub mod tunnel;
pub mod url;
pub mod value;
pub mod writer;

pub use client::{Client, ClientConfig, ClientError, RequestHandler};
pub use frame::RpcFrame;
pub use message::{RpcError, RpcMessage};
pub use shvproto::{self, RpcValue};
pub use url::RpcUrl;
