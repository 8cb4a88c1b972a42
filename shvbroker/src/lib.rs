//! shvbroker: an SHV 3 RPC broker.
//!
//! - [`server`] binds listeners and spawns a [`peer`] task per connection;
//! - [`peer`] does the login phase and forwards frames to the broker task;
//! - [`broker`] is the broker task, sole owner of all broker state, kept in parts that
//!   own their tables: [`peers`], [`mounts`], [`subscriptions`], [`pending`], [`tunnel`],
//!   [`links`];
//! - [`config`] and [`access`] describe users, roles and limits; [`admission`] bounds the
//!   connections, in all and those not logged in yet; [`stall`] closes the ones that
//!   stop reading.

pub mod access;
pub mod admission;
pub mod audit;
pub mod autosetup;
pub mod broker;
pub mod config;
pub mod events;
pub mod link;
pub mod links;
pub mod mounts;
pub mod peer;
pub mod peers;
pub mod pending;
pub mod queue;
pub mod reading;
pub mod ready;
pub mod recording;
pub mod server;
pub mod settings;
pub mod stall;
pub mod subscriptions;
pub mod tunnel;
pub mod web;
