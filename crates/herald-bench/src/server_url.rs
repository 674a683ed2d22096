//! The address of the server under test, parsed and resolved once at the edge.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum ServerUrlError {
    #[error("server URL must start with http:// (got {0:?})")]
    Scheme(String),
    #[error("server URL must be http://HOST:PORT with no path (got {0:?})")]
    Path(String),
    #[error("cannot resolve {0:?}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0:?} resolves to no address")]
    NoAddress(String),
}

/// `http://HOST[:PORT]`: the text as given, the authority for `Host` headers and WebSocket
/// URLs, and the socket address every connection goes to.
#[derive(Debug, Clone)]
pub struct ServerUrl {
    text: String,
    authority: String,
    addr: SocketAddr,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<Self, ServerUrlError> {
        let rest = text.strip_prefix("http://").ok_or_else(|| ServerUrlError::Scheme(text.to_owned()))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('?') {
            return Err(ServerUrlError::Path(text.to_owned()));
        }
        // An authority without a port means port 80, as in any http URL.
        let has_port = if authority.starts_with('[') { authority.contains("]:") } else { authority.contains(':') };
        let with_port = if has_port { authority.to_owned() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| ServerUrlError::Resolve(authority.to_owned(), e))?
            .next()
            .ok_or_else(|| ServerUrlError::NoAddress(authority.to_owned()))?;
        Ok(Self { text: format!("http://{authority}"), authority: authority.to_owned(), addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether client sockets may be bound to other loopback addresses (127.0.0.2, …) to
    /// reach this server.
    pub fn is_ipv4_loopback(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
    }

    /// The WebSocket URL of `target`, a path and query (`/ws?token=…`, `/sub/u-…`).
    pub fn ws_url(&self, target: &str) -> String {
        format!("ws://{}{}", self.authority, target)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// Worker plans carry the URL as text; each worker resolves it again.
impl Serialize for ServerUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ServerUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_and_port() {
        let url = ServerUrl::parse("http://127.0.0.1:9000/").expect("valid");
        assert_eq!(url.authority(), "127.0.0.1:9000");
        assert_eq!(url.addr(), "127.0.0.1:9000".parse().expect("addr"));
        assert!(url.is_ipv4_loopback());
        assert_eq!(url.ws_url("/ws?token=x"), "ws://127.0.0.1:9000/ws?token=x");
    }

    #[test]
    fn defaults_to_port_80() {
        let url = ServerUrl::parse("http://127.0.0.1").expect("valid");
        assert_eq!(url.addr().port(), 80);
    }

    #[test]
    fn rejects_other_schemes_and_paths() {
        assert!(matches!(ServerUrl::parse("https://x:1"), Err(ServerUrlError::Scheme(_))));
        assert!(matches!(ServerUrl::parse("http://x:1/api"), Err(ServerUrlError::Path(_))));
    }
}
