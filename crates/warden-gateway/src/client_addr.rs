//! Which client a request comes from, as the per-address limits and the wrong-key
//! counter see it: the TCP peer, or, when the peer is a reverse proxy the operator
//! trusts (`[server] trusted_proxies`), the address that proxy forwarded
//! (`Forwarded: for=`, else `X-Forwarded-For`); then aggregated to its network (IPv4 /32,
//! IPv6 /64 by default), since one host owns a whole IPv6 /64 and could rotate through
//! it. Behind a proxy that is not trusted, every client counts as the proxy.

use std::net::IpAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;

use crate::listener::ClientAddr;
use crate::swap::Swap;

/// The client's network address, put on each request by [`resolve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientNetwork(pub IpAddr);

#[derive(Debug, Clone)]
pub(crate) struct ClientAddresses {
    trusted: Vec<(IpAddr, u8)>,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl ClientAddresses {
    pub(crate) fn new(trusted: &[(IpAddr, u8)], ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        Self {
            trusted: trusted.to_vec(),
            ipv4_prefix,
            ipv6_prefix,
        }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted
            .iter()
            .any(|(network, prefix)| network_of(address, *prefix) == network_of(*network, *prefix))
    }

    /// The client's network: the forwarded address when the peer is trusted, the peer
    /// otherwise.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        let address = if self.is_trusted(peer) {
            self.forwarded(headers).unwrap_or(peer)
        } else {
            peer
        };
        let prefix = match address {
            IpAddr::V4(_) => self.ipv4_prefix,
            IpAddr::V6(_) => self.ipv6_prefix,
        };
        network_of(address, prefix)
    }

    /// The nearest address in the forwarding chain that is not a trusted proxy (the
    /// proxies append, so that is the rightmost such one); when every hop is trusted,
    /// the first. `None` when the header is missing or unreadable.
    fn forwarded(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let chain = forwarded_for(headers).or_else(|| x_forwarded_for(headers))?;
        chain
            .iter()
            .rev()
            .find(|address| !self.is_trusted(**address))
            .or_else(|| chain.first())
            .copied()
    }
}

/// The `for=` addresses of every `Forwarded` header, in order; `None` when there is
/// none, or one that is not an address (`unknown`, an obfuscated name).
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all("forwarded") {
        for element in value.to_str().ok()?.split(',') {
            for pair in element.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    chain.push(node_address(value.trim().trim_matches('"'))?);
                }
            }
        }
    }
    (!chain.is_empty()).then_some(chain)
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        for item in value.to_str().ok()?.split(',') {
            chain.push(node_address(item.trim())?);
        }
    }
    (!chain.is_empty()).then_some(chain)
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|a| a.to_canonical());
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

/// `address` with every bit past `prefix` cleared.
fn network_of(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// Works out the client's network once, for the layers that count by it.
pub(crate) fn resolve(addresses: &Swap<ClientAddresses>, request: &mut Request) {
    let addresses = addresses.get();
    let peer = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(peer))| peer.ip());
    if let Some(peer) = peer {
        let client = addresses.client(peer, request.headers());
        request.extensions_mut().insert(ClientNetwork(client));
    }
}

/// The client's network, as [`resolve`] found it.
pub(crate) fn client_network(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ClientNetwork>()
        .map(|ClientNetwork(address)| *address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_ipv4_by_address() {
        let addresses = ClientAddresses::new(&[], 32, 64);
        let none = HeaderMap::new();
        assert_eq!(
            addresses.client(ip("2001:db8:1:2:aaaa::1"), &none),
            addresses.client(ip("2001:db8:1:2:ffff:1:2:3"), &none)
        );
        assert_ne!(
            addresses.client(ip("2001:db8:1:2::1"), &none),
            addresses.client(ip("2001:db8:1:3::1"), &none)
        );
        assert_ne!(
            addresses.client(ip("192.0.2.1"), &none),
            addresses.client(ip("192.0.2.2"), &none)
        );
        // A mapped IPv4 address is that IPv4 address.
        assert_eq!(
            addresses.client(ip("::ffff:192.0.2.1"), &none),
            ip("192.0.2.1")
        );
        let wide = ClientAddresses::new(&[], 24, 48);
        assert_eq!(wide.client(ip("192.0.2.77"), &none), ip("192.0.2.0"));
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.5");
        let trusting = ClientAddresses::new(&[(ip("10.0.0.0"), 8)], 32, 64);
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        assert_eq!(trusting.client(proxy, &forwarded), ip("203.0.113.9"));
        // A client that forges the header ahead of the proxy's own entry is not believed.
        let forged = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9")]);
        assert_eq!(trusting.client(proxy, &forged), ip("203.0.113.9"));
        let standard = headers(&[("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https")]);
        assert_eq!(trusting.client(proxy, &standard), ip("2001:db8:cafe::"));
        // Unreadable: the proxy itself.
        let unknown = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(trusting.client(proxy, &unknown), proxy);
        // From a peer that is not trusted, the headers mean nothing.
        let direct = ClientAddresses::new(&[], 32, 64);
        assert_eq!(
            direct.client(ip("198.51.100.1"), &forwarded),
            ip("198.51.100.1")
        );
    }
}
