//! The client's source address, for per-address limits: the TCP peer, or — when the peer is a
//! trusted proxy (the gateway) — the nearest untrusted hop in `X-Forwarded-For`.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;

/// An IP network: `10.0.0.0/8`, `::1/128`, or a bare address (one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not an IP address or CIDR (like 10.0.0.0/8)");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr = canonical(addr.parse().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address a request came from. Walks `X-Forwarded-For` from the right (the hop our proxy
/// added) past trusted proxies; a client can prepend anything, but not append. Several header
/// lines are one list in order (RFC 9110 §5.3), so the walk starts at the last line.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let mut nearest = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return nearest;
        };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(ip) => nearest = canonical(ip),
                Ok(ip) => return canonical(ip),
                Err(_) => return nearest,
            }
        }
    }
    nearest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn networks() {
        assert!(net("10.0.0.0/8").contains("10.1.2.3".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(net("::1").contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("gateway".parse::<IpNet>().is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4, 10.0.0.5".parse().unwrap(),
        );
        let trusted = [net("10.0.0.0/8")];
        let from_proxy = client_address("10.0.0.9".parse().unwrap(), &headers, &trusted);
        assert_eq!(from_proxy, "1.2.3.4".parse::<IpAddr>().unwrap());
        let direct = client_address("5.5.5.5".parse().unwrap(), &headers, &trusted);
        assert_eq!(direct, "5.5.5.5".parse::<IpAddr>().unwrap());
        let no_header = client_address("10.0.0.9".parse().unwrap(), &HeaderMap::new(), &trusted);
        assert_eq!(no_header, "10.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn several_forwarded_for_lines_are_walked_from_the_last() {
        let mut headers = HeaderMap::new();
        // What the client sent, then what our proxy appended on a line of its own.
        headers.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        headers.append("x-forwarded-for", "1.2.3.4, 10.0.0.5".parse().unwrap());
        let trusted = [net("10.0.0.0/8")];
        let address = client_address("10.0.0.9".parse().unwrap(), &headers, &trusted);
        assert_eq!(address, "1.2.3.4".parse::<IpAddr>().unwrap());
    }
}
