//! **[ext]** The SOCKS5 handshake (RFC 1928) of a dynamic forward (`shvrsh -D`): no
//! authentication (the proxy listens on loopback by default, as ssh's), CONNECT only,
//! to an IPv4 or IPv6 address or a name that the device resolves (curl's
//! `--socks5-hostname`). Anything else is answered with the RFC's error code and
//! closed; a client that does not finish within [`HANDSHAKE_TIMEOUT`] is dropped.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reply codes (RFC 1928 §6).
pub const SUCCEEDED: u8 = 0;
pub const GENERAL_FAILURE: u8 = 1;
pub const COMMAND_NOT_SUPPORTED: u8 = 7;
pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("not SOCKS 5 (version byte {0})")]
    Version(u8),
    #[error("the client offers no method without authentication")]
    NoMethod,
    #[error("command {0} is not supported (only CONNECT)")]
    Command(u8),
    #[error("address type {0} is not supported")]
    AddressType(u8),
    #[error("a bad destination: {0}")]
    Destination(&'static str),
    #[error("the handshake took longer than {HANDSHAKE_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server side of the handshake up to the CONNECT request and returns its
/// destination. The caller answers with [`reply`].
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(String, u16), SocksError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(s))
        .await
        .map_err(|_| SocksError::Timeout)?
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<(String, u16), SocksError> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(SocksError::Version(head[0]));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        s.write_all(&[5, 0xff]).await?;
        return Err(SocksError::NoMethod);
    }
    s.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    if req[0] != 5 {
        return Err(SocksError::Version(req[0]));
    }
    if req[1] != 1 {
        reply(s, COMMAND_NOT_SUPPORTED).await;
        return Err(SocksError::Command(req[1]));
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            s.read_exact(&mut name).await?;
            // A host name: letters, digits and `.-_`, nothing a log or a resolver
            // could take for something else.
            if name.is_empty()
                || !name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b))
            {
                reply(s, GENERAL_FAILURE).await;
                return Err(SocksError::Destination("not a host name"));
            }
            String::from_utf8(name).map_err(|_| SocksError::Destination("not a host name"))?
        }
        other => {
            reply(s, ADDRESS_TYPE_NOT_SUPPORTED).await;
            return Err(SocksError::AddressType(other));
        }
    };
    let mut port = [0u8; 2];
    s.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    if port == 0 {
        reply(s, GENERAL_FAILURE).await;
        return Err(SocksError::Destination("port 0"));
    }
    Ok((host, port))
}

/// Answers the CONNECT request (the bound address is not known here: 0.0.0.0:0).
pub async fn reply<S: AsyncWrite + Unpin>(s: &mut S, code: u8) {
    let _ = s.write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(client_bytes: &[u8]) -> (Result<(String, u16), SocksError>, Vec<u8>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        b.write_all(client_bytes).await.unwrap();
        let r = accept(&mut a).await;
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        (r, got)
    }

    #[tokio::test]
    async fn connect_requests_of_every_address_type() {
        let (r, got) = run(&[
            5, 1, 0, 5, 1, 0, 3, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', 0, 80,
        ])
        .await;
        assert_eq!(r.unwrap(), ("localhost".into(), 80));
        assert_eq!(got, [5, 0]);
        let (r, _) = run(&[5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]).await;
        assert_eq!(r.unwrap(), ("127.0.0.1".into(), 8080));
        let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 22]);
        assert_eq!(run(&v6).await.0.unwrap(), ("::1".into(), 22));
    }

    #[tokio::test]
    async fn everything_else_is_refused_with_the_rfc_code() {
        assert!(matches!(
            run(&[4, 1, 0]).await.0,
            Err(SocksError::Version(4))
        ));
        let (r, got) = run(&[5, 1, 2]).await;
        assert!(matches!(r, Err(SocksError::NoMethod)));
        assert_eq!(got, [5, 0xff]);
        let (r, got) = run(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 1]).await;
        assert!(matches!(r, Err(SocksError::Command(2))));
        assert_eq!(got[2..4], [5, COMMAND_NOT_SUPPORTED]);
        let (r, _) = run(&[5, 1, 0, 5, 1, 0, 3, 3, b'a', b'\n', b'b', 0, 80]).await;
        assert!(matches!(r, Err(SocksError::Destination(_))));
        let (r, _) = run(&[5, 1, 0, 5, 1, 0, 1, 1, 2, 3, 4, 0, 0]).await;
        assert!(matches!(r, Err(SocksError::Destination(_))));
        // A client that stops half-way: the timeout, not a hang.
        tokio::time::pause();
        let (mut a, _b) = tokio::io::duplex(64);
        assert!(matches!(accept(&mut a).await, Err(SocksError::Timeout)));
    }
}
