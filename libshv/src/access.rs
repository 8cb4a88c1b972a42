//! Access levels (0..63) and their grant strings.

/// Well-known access levels.
pub mod level {
    pub const BROWSE: i64 = 1;
    pub const READ: i64 = 8;
    pub const WRITE: i64 = 16;
    pub const COMMAND: i64 = 24;
    pub const CONFIG: i64 = 32;
    pub const SERVICE: i64 = 40;
    pub const SUPER_SERVICE: i64 = 48;
    pub const DEVELOPER: i64 = 56;
    pub const ADMIN: i64 = 63;
}

const NAMES: [(&str, i64); 9] = [
    ("bws", level::BROWSE),
    ("rd", level::READ),
    ("wr", level::WRITE),
    ("cmd", level::COMMAND),
    ("cfg", level::CONFIG),
    ("srv", level::SERVICE),
    ("ssrv", level::SUPER_SERVICE),
    ("dev", level::DEVELOPER),
    ("su", level::ADMIN),
];

/// Parses `rd`, `wr`, …, or a number 0..63.
pub fn parse_level(s: &str) -> Option<i64> {
    let s = s.trim();
    NAMES
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, l)| *l)
        .or_else(|| s.parse::<i64>().ok().filter(|l| (0..=63).contains(l)))
}

/// The highest named level not above `level` (`rd` for 10), or the number itself.
pub fn level_name(level: i64) -> String {
    NAMES
        .iter()
        .find(|(_, l)| *l == level)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| level.to_string())
}

/// The highest named level not above `level`: peers such as pyshv accept only the
/// named levels on the wire, and rounding down never grants more.
pub fn named_floor(level: i64) -> i64 {
    NAMES
        .iter()
        .map(|(_, l)| *l)
        .filter(|l| *l <= level)
        .max()
        .unwrap_or(0)
}

/// The level expressed by an Access grant string such as `rd,foo` (first known token).
pub fn level_from_access(access: &str) -> Option<i64> {
    access.split(',').filter_map(parse_level_name_only).max()
}

fn parse_level_name_only(s: &str) -> Option<i64> {
    NAMES.iter().find(|(n, _)| *n == s.trim()).map(|(_, l)| *l)
}

/// The level a device grants a request: the AccessLevel its broker set; for a broker
/// that sets none (SHV 2), its access string; with neither, everything, as the broker
/// already checked the request.
pub fn granted(meta: &shvproto::MetaMap) -> i64 {
    use crate::meta::tag;
    match meta.get(tag::ACCESS_LEVEL).and_then(crate::value::as_i64) {
        Some(l) => l,
        None => match meta.get(tag::ACCESS).map(|v| &v.value) {
            Some(shvproto::Value::String(s)) => level_from_access(s).unwrap_or(level::ADMIN),
            _ => level::ADMIN,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_level("rd"), Some(8));
        assert_eq!(parse_level("su"), Some(63));
        assert_eq!(parse_level("20"), Some(20));
        assert_eq!(parse_level("64"), None);
        assert_eq!(level_name(16), "wr");
        assert_eq!(level_from_access("wr,xyz"), Some(16));
        assert_eq!(level_from_access("xyz"), None);
        assert_eq!(named_floor(10), 8);
        assert_eq!(named_floor(63), 63);
        assert_eq!(named_floor(0), 0);
    }

    #[test]
    fn granted_level_from_meta() {
        use crate::meta::tag;
        let mut m = shvproto::MetaMap::new();
        assert_eq!(granted(&m), level::ADMIN);
        m.insert(tag::ACCESS, shvproto::RpcValue::from("rd"));
        assert_eq!(granted(&m), level::READ);
        m.insert(tag::ACCESS_LEVEL, shvproto::RpcValue::from(24));
        assert_eq!(granted(&m), 24);
    }
}
