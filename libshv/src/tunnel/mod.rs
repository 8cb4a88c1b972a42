//! Tunnels (tunnel.md): the `TunnelCtl` meta value and the endpoint state machine that
//! `shvrsh` (operator side) and `shvrexec` (device side) share.
//!
//! A tunnel is a pair of request ids: R (rsh's `launchRexec` request) on which rexec
//! sends and rsh receives, and W (rexec's own id) on which rsh sends and rexec receives.
//! Every frame is an RPC *response*; brokers route it by its CallerIds (tag 11), which
//! each end learned from the RevCallerIds (tag 13) of the handshake frame it received.
//!
//! ```text
//! rsh   --launchRexec(R)----------------------------------> agent      (launch_request)
//! agent --<8:R,13:null,tctl{1:1}>--> broker                            (find_tunnel_request)
//! broker--<8:R,tctl{1:2,2,3,4,6}>--> agent -> spawns rexec             (FindTunnelResponse)
//! rexec --<8:R,11:cids,13:null,tctl{1:3,5:W}>--> rsh                  (TunnelEnd::create)
//! rsh   --<8:W,11:rcid,13:null,tctl{1:4}>--> rexec                    (TunnelEnd::accept)
//! data  --<8:R|W,11:path>i{2:[channel, blob]}-->                      (send_data / recv)
//! close --<8:R|W,11:path,tctl{1:5}>i{2:{"exitCode":n}}-->             (close)
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shvproto::{IMap, Map, MetaMap, RpcValue, Value};
use tokio::sync::mpsc;

use crate::client::{Client, ClientError};
use crate::frame::RpcFrame;
use crate::message::{RpcError, RpcMessage};
use crate::meta::{self, key, tag};

mod address;
#[cfg(feature = "copy")]
pub mod copy;
mod ctl;
mod dialect;
mod endpoint;
mod fast;
mod frames;
mod launch;
pub mod mux;
pub mod socks;

// Each name once, so a reader sees what the tunnel API is and where it lives.
pub use address::{parse_tunnel_address, tunnel_host_port, TunnelAddressError};
use ctl::as_i64;
pub use ctl::{
    channel, tctl_key, CloseStatus, Control, TunnelCtl, TunnelCtlError, TunnelState,
    TUNNEL_CTL_META_TYPE,
};
pub use dialect::{Dialect, MAP_FORM_SIGNATURE};
pub use endpoint::{
    frame_event, frame_event_bounded, DeferredAcker, NotRead, TunnelEnd, TunnelReceiver,
    TunnelSender, DATA_HEADROOM, FLOW_WINDOW, MAX_CHUNK,
};
use fast::*;
pub use frames::{
    close_with_error, find_tunnel_request, parse_data, tunnel_frame, TunnelError, TunnelEvent,
};
pub use launch::{
    describe_launch, FileCopy, Forward, LaunchParams, RexecLine, METHOD_COPY_IN, METHOD_COPY_OUT,
    METHOD_FORWARD_DYNAMIC, METHOD_FORWARD_TCP, METHOD_LISTEN_TCP, METHOD_RUN_CMD,
    METHOD_RUN_PTY_CMD,
};

#[cfg(test)]
mod tests;
