//! URLs as etcd's flags take them: `scheme://host:port`, nothing else.
//!
//! Owns parsing (with etcd's error wording), the canonical text used for
//! member IDs and `--initial-cluster`, and turning a URL into socket
//! addresses. Knows nothing about which flag a URL came from.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// A URL scheme etcd accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TCP with TLS.
    Https,
    /// A unix socket (etcd's `unix://name:port`).
    Unix,
    /// A unix socket with TLS.
    Unixs,
}

impl Scheme {
    /// The scheme as written in a URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Unix => "unix",
            Scheme::Unixs => "unixs",
        }
    }
}

/// A parsed `scheme://host:port` URL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Url {
    /// The canonical text (scheme lower-cased, host and port as written).
    /// Ordering and equality follow it, as etcd's sorted URL lists do.
    text: String,
    /// The scheme.
    pub scheme: Scheme,
    /// The host without IPv6 brackets: a name, an IPv4 or an IPv6 address.
    /// May be empty (`http://:2379`); the validation of bind and advertise
    /// URLs refuses that where etcd does.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Url {
    /// Parses one URL, with etcd's error messages where etcd has one.
    pub fn parse(input: &str) -> Result<Url, String> {
        let s = input.trim();
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("URL scheme must be http, https, unix, or unixs: {s}"));
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "unix" => Scheme::Unix,
            "unixs" => Scheme::Unixs,
            _ => return Err(format!("URL scheme must be http, https, unix, or unixs: {s}")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if tail.starts_with('/') {
            return Err(format!("URL must not contain a path: {s}"));
        }
        if !tail.is_empty() {
            return Err(format!("URL must not contain a query or fragment: {s}"));
        }
        if authority.contains('@') {
            return Err(format!("URL must not contain user information: {s}"));
        }
        let not_host_port = || format!("URL address does not have the form \"host:port\": {s}");
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (addr, after) = bracketed.split_once(']').ok_or_else(not_host_port)?;
            let port = after.strip_prefix(':').ok_or_else(not_host_port)?;
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(format!("invalid IPv6 address {addr:?} in URL: {s}"));
            }
            (addr, port)
        } else {
            let (host, port) = authority.rsplit_once(':').ok_or_else(not_host_port)?;
            if host.contains(':') {
                return Err(not_host_port());
            }
            (host, port)
        };
        if port.is_empty() {
            return Err(not_host_port());
        }
        if !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("parse {s:?}: invalid port \":{port}\" after host"));
        }
        let port: u16 = port.parse().map_err(|_| format!("invalid port {port} (the largest is 65535) in URL: {s}"))?;
        Ok(Url { text: format!("{}://{}", scheme.as_str(), authority), scheme, host: host.to_string(), port })
    }

    /// The canonical text, e.g. `http://127.0.0.1:2380`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the scheme asks for TLS.
    pub const fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Https | Scheme::Unixs)
    }

    /// Whether the scheme names a unix socket.
    pub const fn is_unix(&self) -> bool {
        matches!(self.scheme, Scheme::Unix | Scheme::Unixs)
    }

    /// The host as an IP address, with `localhost` meaning 127.0.0.1.
    pub fn ip(&self) -> Option<IpAddr> {
        if self.host.eq_ignore_ascii_case("localhost") {
            return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        self.host.parse().ok()
    }

    /// The addresses to bind or dial. `localhost` is 127.0.0.1 (only: corekv
    /// binds one loopback address, as etcd's listeners effectively do), an IP
    /// literal is itself (`0.0.0.0` and `[::]` stay wildcards), an empty host
    /// is 0.0.0.0, and any other name is resolved by the system resolver.
    pub fn socket_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        if self.host.is_empty() {
            return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.port)]);
        }
        if let Some(ip) = self.ip() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl crate::log::LogValue for Url {
    fn write_json(&self, out: &mut String) {
        crate::log::write_json_str(&self.text, out);
    }
}

/// Parses a comma-separated URL list as etcd's URL flags do: every element
/// must parse; the result is sorted and without duplicates.
pub fn parse_list(s: &str) -> Result<Vec<Url>, String> {
    let mut urls = Vec::new();
    for part in s.split(',') {
        if part.trim().is_empty() && !s.trim().is_empty() {
            return Err(format!("URL scheme must be http, https, unix, or unixs: {part}"));
        }
        if !part.trim().is_empty() {
            urls.push(Url::parse(part)?);
        }
    }
    urls.sort();
    urls.dedup();
    Ok(urls)
}

/// The list joined with commas, as etcd prints URL lists in messages.
pub fn join(urls: &[Url]) -> String {
    urls.iter().map(Url::as_str).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        Url::parse(s).err().unwrap_or_default()
    }

    #[test]
    fn parses_scheme_host_and_port() {
        let u = Url::parse(" HTTP://127.0.0.1:2379 ").ok();
        let u = u.as_ref();
        assert_eq!(u.map(Url::as_str), Some("http://127.0.0.1:2379"));
        assert_eq!(u.map(|u| u.port), Some(2379));
        assert_eq!(u.map(|u| u.host.as_str()), Some("127.0.0.1"));
        let v6 = Url::parse("https://[::1]:2380").ok();
        assert_eq!(v6.as_ref().map(|u| u.host.as_str()), Some("::1"));
        assert_eq!(v6.as_ref().map(Url::as_str), Some("https://[::1]:2380"));
        assert_eq!(v6.map(|u| u.is_tls()), Some(true));
    }

    #[test]
    fn errors_use_etcds_wording() {
        assert_eq!(err("ftp://127.0.0.1:1"), "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:1");
        assert_eq!(err("127.0.0.1:2379"), "URL scheme must be http, https, unix, or unixs: 127.0.0.1:2379");
        assert_eq!(err("http://127.0.0.1"), "URL address does not have the form \"host:port\": http://127.0.0.1");
        assert_eq!(err("http://::1:2379"), "URL address does not have the form \"host:port\": http://::1:2379");
        assert_eq!(err("http://127.0.0.1:2379/"), "URL must not contain a path: http://127.0.0.1:2379/");
        assert_eq!(err("http://127.0.0.1:abc"), "parse \"http://127.0.0.1:abc\": invalid port \":abc\" after host");
        assert!(err("http://127.0.0.1:99999").starts_with("invalid port 99999"));
        assert!(err("http://[zz]:1").starts_with("invalid IPv6 address"));
        assert!(err("http://a:1?x=1").starts_with("URL must not contain a query"));
    }

    #[test]
    fn localhost_resolves_to_ipv4_loopback_and_wildcards_stay() {
        let addrs = |s: &str| Url::parse(s).ok().and_then(|u| u.socket_addrs().ok());
        let lo: SocketAddr = ([127, 0, 0, 1], 2379).into();
        assert_eq!(addrs("http://localhost:2379"), Some(vec![lo]));
        let any: SocketAddr = ([0, 0, 0, 0], 2379).into();
        assert_eq!(addrs("http://0.0.0.0:2379"), Some(vec![any]));
        let v6: Option<SocketAddr> = "[::]:2380".parse().ok();
        assert_eq!(addrs("http://[::]:2380"), v6.map(|a| vec![a]));
    }

    #[test]
    fn lists_are_sorted_and_deduplicated() {
        let l = parse_list("http://b:2,http://a:1,http://b:2").unwrap_or_default();
        assert_eq!(join(&l), "http://a:1,http://b:2");
        assert_eq!(parse_list("").map(|l| l.len()), Ok(0));
        assert!(parse_list("http://a:1,").is_err());
    }
}
