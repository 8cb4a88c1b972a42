//! shvbroker: an SHV 3 RPC broker.
//!
//! Public for other crates: [`config`] and [`settings`] (what a broker runs by),
//! [`server`] (bind, serve), [`ready`] (the `--ready-file`) and [`mounts`] (for the
//! routing benchmark). Everything else is the broker's own.
//!
//! - [`server`] binds listeners and spawns a [`peer`] task per connection;
//! - [`peer`] does the login phase and forwards frames to the broker task;
//! - [`broker`] is the broker task, sole owner of all broker state, kept in parts that
//!   own their tables: [`peers`], [`mounts`], [`subscriptions`], [`pending`], [`tunnel`],
//!   [`links`];
//! - [`config`] is the config file as data, [`settings`] what is checked and compiled
//!   from it; [`access`] what a user may do; [`admission`] bounds the
//!   connections, in all and those not logged in yet; [`stall`] closes the ones that
//!   stop reading.

pub(crate) mod access;
pub(crate) mod admission;
pub(crate) mod audit;
pub(crate) mod autosetup;
pub(crate) mod broker;
pub mod config;
pub(crate) mod events;
pub(crate) mod link;
pub(crate) mod links;
pub mod mounts;
pub(crate) mod peer;
pub(crate) mod peers;
pub(crate) mod pending;
pub(crate) mod queue;
pub(crate) mod reading;
pub mod ready;
pub(crate) mod recording;
pub(crate) mod remote_sessions;
pub mod server;
pub mod settings;
pub(crate) mod stall;
pub(crate) mod subscriptions;
pub(crate) mod tunnel;
pub(crate) mod web;
