//! Durations in the config file are whole seconds (`login_timeout: 30`): the shape every
//! SHV broker's config uses, and the one operators type. The data layer holds them as
//! `Duration` already, so no reader converts seconds again.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}
