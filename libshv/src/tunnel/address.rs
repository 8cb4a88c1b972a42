//! Where a tunnel end (shvrexec) connects: the Host and Port of a FindTunnelResponse.
//!
//! Host is a host name, as in the original design, or **[ext]** a transport URL without
//! user or options (`ssl://central.example:3756`, `wss://h/shv`), so that a broker
//! reachable only over TLS or WebSocket can host tunnels. Port is set either way, for
//! peers that read only Host and Port.

use crate::url::{Endpoint, RpcUrl, Transport, DEFAULT_PORT};

/// The schemes a tunnel host may name: network transports only (a peer must not point
/// shvrexec at a local socket or a serial line of the device).
const NETWORK_SCHEMES: [&str; 6] = ["tcp", "ssl", "tcps", "ssls", "ws", "wss"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TunnelAddressError {
    #[error("tunnel address: {0}")]
    Url(#[from] crate::url::UrlError),
    #[error("tunnel address '{0}': only {NETWORK_SCHEMES:?} transports, without user or options")]
    NotNetwork(String),
}

/// The transport a tunnel end uses to reach the tunnel host, from Host and Port.
pub fn parse_tunnel_address(
    host: &str,
    port: Option<u16>,
) -> Result<Transport, TunnelAddressError> {
    // A host name never holds ':' (an IPv6 literal aside); anything else with one is
    // a URL, and must be one we accept.
    if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
        let url = RpcUrl::parse(host)?;
        let t = url.transport().clone();
        let plain_tls = t.tls.as_ref().is_none_or(|o| *o == Default::default());
        let no_credentials = url.user.is_empty()
            && url.password.is_none()
            && url.shapass.is_none()
            && url.token.is_none()
            && url.device_id.is_none()
            && url.mount_point.is_none();
        if !NETWORK_SCHEMES.contains(&t.scheme()) || !plain_tls || !no_credentials {
            // A host sent by a lying broker may hold a password: never show it.
            return Err(TunnelAddressError::NotNetwork(
                crate::logsafe::shown(&crate::url::redact(host)).to_string(),
            ));
        }
        return Ok(t);
    }
    let host = if host.is_empty() { "localhost" } else { host };
    Ok(Transport::tcp(host, port.unwrap_or(DEFAULT_PORT)))
}

/// Host and Port for a FindTunnelResponse naming `t`: a bare host for plain TCP (what
/// every peer understands), else the transport's URL.
pub fn tunnel_host_port(t: &Transport) -> (String, u16) {
    let port = t.host_port().map_or(0, |(_, p)| p);
    match (&t.endpoint, t.scheme()) {
        (Endpoint::Tcp { host, .. }, "tcp") => (host.clone(), port),
        _ => (t.to_string(), port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_hosts_and_urls() {
        assert_eq!(
            parse_tunnel_address("h", Some(4000)).unwrap(),
            Transport::tcp("h", 4000)
        );
        assert_eq!(
            parse_tunnel_address("", None).unwrap(),
            Transport::tcp("localhost", DEFAULT_PORT)
        );
        for url in [
            "ssl://h:3756",
            "wss://h:443/shv",
            "tcps://h:3765",
            "tcp://h:1",
        ] {
            let t = parse_tunnel_address(url, Some(1)).unwrap();
            let (host, port) = tunnel_host_port(&t);
            assert_eq!(parse_tunnel_address(&host, Some(port)).unwrap(), t, "{url}");
        }
        assert_eq!(
            parse_tunnel_address("::1", Some(7)).unwrap(),
            Transport::tcp("::1", 7)
        );
        assert_eq!(
            tunnel_host_port(&Transport::tcp("h", 5)),
            ("h".to_string(), 5)
        );
    }

    #[test]
    fn a_lying_broker_cannot_point_rexec_at_local_files_or_send_options() {
        for bad in [
            "unix:/run/x.sock",
            "serial:/dev/ttyS0",
            "ssl://h:1?ca=/etc/shadow",
            "tcp://u@h:1?password=x",
            "gopher://h",
            "localhost:4000",
        ] {
            let e = parse_tunnel_address(bad, None).unwrap_err().to_string();
            assert!(!e.contains("password=x"), "{e}");
        }
    }
}
