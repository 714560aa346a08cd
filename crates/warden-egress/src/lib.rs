//! The egress guard for every outbound connection (remote upstreams, JWKS fetches,
//! `import_url`, the stdio children's proxy): only public addresses, unless the operator
//! opens a host or network with `[egress] allow`.
//!
//! [`EgressPolicy::addresses`] resolves a name once and drops every blocked address; the
//! caller connects to exactly those (no second lookup a rebinding DNS server could answer
//! differently). `warden-upstream`'s resolver hands that list to the HTTP client, and
//! [`EgressPolicy::connect`] to a raw TCP connection ([`proxy`], the stdio children's
//! forward proxy, among others). Addresses written as the host never
//! reach a resolver: they are checked after the URL parser has normalised every IPv4
//! notation (decimal, octal, hex, short forms) to the dotted one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::net::TcpStream;

use warden_config::EgressRule;

pub mod proxy;

/// Names of cloud metadata services, refused whatever they resolve to.
const METADATA_HOSTS: [&str; 5] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A host, and the address it is (or resolves to) with the range that closes it.
    #[error("{}; open it with [egress] allow if it is meant", blocked(.host, .address))]
    Blocked {
        host: String,
        address: Option<(IpAddr, &'static str)>,
    },
    #[error("the URL has no host")]
    NoHost,
    #[error("{0} is not a valid host")]
    BadHost(String),
    #[error("{0} could not be resolved")]
    Unresolved(String),
    #[error("{0} could not be reached")]
    Unreachable(String),
}

/// `203.0.113.80 is a documentation range`, `db.internal resolves to 10.1.2.3, a private
/// network (RFC 1918)`, `metadata.google.internal is a cloud metadata name`.
fn blocked(host: &str, address: &Option<(IpAddr, &'static str)>) -> String {
    match address {
        Some((ip, why)) if ip.to_string() != host => format!("{host} resolves to {ip}, {why}"),
        Some((_, why)) => format!("{host} is {why}"),
        None => format!("{host} is a cloud metadata name"),
    }
}

/// How names become addresses: the system resolver unless a test (or an embedder with its
/// own DNS) supplies another. Whatever answers, the policy judges every address.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// What Warden may connect to.
#[derive(Default, Clone)]
pub struct EgressPolicy {
    /// What `[egress] allow` opens; shared with the children's policy, so that a reload
    /// changes both at once.
    allowed: Arc<RwLock<Allowed>>,
    lookup: Option<Lookup>,
    /// This machine stays closed whatever `allow` says (the stdio children's proxy:
    /// Warden's own ports, its admin endpoint and other children's proxies are here).
    local_closed: bool,
}

/// The hosts and networks the operator opened.
#[derive(Debug, Default)]
struct Allowed {
    hosts: Vec<String>,
    networks: Vec<(IpAddr, u8)>,
}

impl Allowed {
    fn from_rules(allow: &[EgressRule]) -> Self {
        let mut allowed = Self::default();
        for rule in allow {
            match rule {
                EgressRule::Host(host) => allowed.hosts.push(host.clone()),
                EgressRule::Network(ip, prefix) => allowed.networks.push((*ip, *prefix)),
            }
        }
        allowed
    }
}

impl std::fmt::Debug for EgressPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressPolicy")
            .field("allowed", &*self.allowed())
            .finish_non_exhaustive()
    }
}

impl EgressPolicy {
    pub fn new(allow: &[EgressRule]) -> Arc<Self> {
        Arc::new(Self::from_rules(allow))
    }

    /// A policy whose names are resolved by `lookup` instead of the system resolver.
    pub fn with_lookup(allow: &[EgressRule], lookup: Lookup) -> Arc<Self> {
        Arc::new(Self {
            lookup: Some(lookup),
            ..Self::from_rules(allow)
        })
    }

    /// The same policy for stdio children: an operator who opens loopback for Warden's
    /// own upstreams does not open this machine to every child.
    pub fn for_children(&self) -> Arc<Self> {
        Arc::new(Self {
            local_closed: true,
            ..self.clone()
        })
    }

    fn from_rules(allow: &[EgressRule]) -> Self {
        Self {
            allowed: Arc::new(RwLock::new(Allowed::from_rules(allow))),
            ..Self::default()
        }
    }

    /// Replaces what `[egress] allow` opens (a reload), for Warden's own requests and
    /// the children's proxies alike, from the next connection on.
    pub fn replace(&self, allow: &[EgressRule]) {
        *self.allowed.write().unwrap_or_else(PoisonError::into_inner) = Allowed::from_rules(allow);
    }

    fn allowed(&self) -> std::sync::RwLockReadGuard<'_, Allowed> {
        self.allowed.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed()
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether Warden may connect to `ip` (reached through `host`).
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        if self.local_closed && is_this_machine(ip) {
            return false;
        }
        self.host_allowed(host)
            || self.host_allowed(&ip.to_string())
            || self
                .allowed()
                .networks
                .iter()
                .any(|(net, prefix)| in_network(ip, *net, *prefix))
            || !is_blocked(ip)
    }

    /// Checks a URL's host: a metadata name or a blocked address written as the host is
    /// refused here (names are checked again, per address, when they are resolved).
    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressError> {
        let host = url.host().ok_or(EgressError::NoHost)?;
        self.check_host(&host.to_owned())
    }

    fn check_host(&self, host: &url::Host) -> Result<(), EgressError> {
        match host {
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if METADATA_HOSTS.contains(&name.as_str()) && !self.host_allowed(&name) {
                    return Err(EgressError::Blocked {
                        host: name,
                        address: None,
                    });
                }
                Ok(())
            }
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(*ip)),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(*ip)),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        if self.allows(&ip.to_string(), ip) {
            Ok(())
        } else {
            Err(self.blocked(ip.to_string(), ip))
        }
    }

    /// The refusal of `host` for address `ip`, naming the range that closes it.
    fn blocked(&self, host: String, ip: IpAddr) -> EgressError {
        let why = if self.local_closed && is_this_machine(ip) {
            "this machine, which children never reach"
        } else {
            block_reason(ip).unwrap_or("not allowed")
        };
        EgressError::Blocked {
            host,
            address: Some((ip, why)),
        }
    }

    /// The addresses of `host` that may be connected to; none is an error. `host` is
    /// normalised as a URL's would be, so every IPv4 notation and bracketed IPv6 is an
    /// address here, not a name.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, EgressError> {
        let parsed = url::Host::parse(host).map_err(|_| EgressError::BadHost(host.to_owned()))?;
        self.check_host(&parsed)?;
        let name = match parsed {
            url::Host::Ipv4(ip) => return Ok(vec![IpAddr::V4(ip)]),
            url::Host::Ipv6(ip) => return Ok(vec![IpAddr::V6(ip)]),
            url::Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
        };
        let resolved = match &self.lookup {
            Some(lookup) => lookup(name.clone()).await,
            None => tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map(|found| found.map(|address| address.ip()).collect()),
        }
        .map_err(|_| EgressError::Unresolved(name.clone()))?;
        let first = resolved.first().copied();
        let allowed: Vec<IpAddr> = resolved
            .into_iter()
            .filter(|ip| self.allows(&name, *ip))
            .collect();
        match (allowed.is_empty(), first) {
            (false, _) => Ok(allowed),
            (true, Some(ip)) => Err(self.blocked(name, ip)),
            (true, None) => Err(EgressError::Unresolved(name)),
        }
    }

    /// A TCP connection to `host:port` through the guard: to one of the addresses that
    /// were checked, never to a second lookup's answer.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, EgressError> {
        let addresses = self.addresses(host).await?;
        for ip in addresses {
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                TcpStream::connect(SocketAddr::new(ip, port)),
            );
            if let Ok(Ok(stream)) = attempt.await {
                return Ok(stream);
            }
        }
        Err(EgressError::Unreachable(host.to_owned()))
    }
}

/// Loopback and unspecified addresses, in either family (a connection to 0.0.0.0 reaches
/// this machine).
fn is_this_machine(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

/// Loopback, private, link-local, shared, documentation, benchmarking, multicast,
/// broadcast and reserved ranges, and the IPv6 forms that embed them.
pub fn is_blocked(ip: IpAddr) -> bool {
    block_reason(ip).is_some()
}

/// Why `ip` is closed by default: the range it is in, as a refusal names it.
pub fn block_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = if ip.is_unspecified() || a == 0 {
        "the unspecified or \"this network\" range"
    } else if ip.is_loopback() {
        "loopback (this machine)"
    } else if ip.is_private() {
        "a private network (RFC 1918)"
    } else if ip.is_link_local() {
        "link-local (the cloud metadata address is there)"
    } else if a == 100 && (64..128).contains(&b) {
        "shared address space (carrier-grade NAT)"
    } else if a == 192 && b == 0 && c == 0 {
        "an IETF protocol range"
    } else if (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        "a documentation range"
    } else if a == 192 && b == 88 && c == 99 {
        "the 6to4 relay range"
    } else if a == 198 && (b == 18 || b == 19) {
        "a benchmarking range"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved or broadcast"
    } else {
        return None;
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) carry an IPv4 address:
    // judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return v4_reason(v4);
    }
    let reason = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.is_loopback() {
        "loopback (this machine)"
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (::a.b.c.d, deprecated) and the rest of ::/96.
        "an IPv4-compatible address"
    } else if (segments[0] & 0xfe00) == 0xfc00 {
        "a unique-local network"
    } else if (segments[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if (segments[0] & 0xffc0) == 0xfec0 {
        "site-local (deprecated)"
    } else if (segments[0] & 0xff00) == 0xff00 {
        "multicast"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "a documentation range"
    } else if segments[0] == 0x2001 && segments[1] < 0x0200 {
        "an IETF protocol range (Teredo among them)"
    } else if segments[0] == 0x2002 {
        "6to4, which embeds any IPv4 address"
    } else if segments[0] == 0x0100 && segments[1..4] == [0, 0, 0] {
        "the discard prefix"
    } else if segments[0] == 0x0064 && segments[1] == 0xff9b {
        "local-use NAT64"
    } else {
        return None;
    };
    Some(reason)
}

fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str, policy: &EgressPolicy) -> bool {
        policy.check_url(&url::Url::parse(url).unwrap()).is_err()
    }

    #[test]
    fn private_addresses_in_every_notation_are_refused() {
        let policy = EgressPolicy::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[::127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://198.18.0.1/",
            "http://192.0.2.1/",
            "http://[2001:db8::1]/",
            "http://[2002:7f00:1::]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
        ] {
            assert!(refused(url, &policy), "{url}");
        }
        for url in [
            "https://93.184.215.14/",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
            "https://example.com/",
        ] {
            assert!(!refused(url, &policy), "{url}");
        }
    }

    #[test]
    fn the_operator_opens_hosts_and_networks_explicitly() {
        let policy = EgressPolicy::new(&[
            EgressRule::Host("127.0.0.1".into()),
            EgressRule::Network("10.0.0.0".parse().unwrap(), 8),
            EgressRule::Host("internal.example".into()),
        ]);
        assert!(!refused("http://127.0.0.1:8080/mcp", &policy));
        assert!(!refused("http://10.9.8.7/", &policy));
        assert!(refused("http://11.0.0.1/", &policy) == is_blocked("11.0.0.1".parse().unwrap()));
        assert!(refused("http://192.168.0.1/", &policy));
        assert!(policy.allows("internal.example", "192.168.0.7".parse().unwrap()));
        assert!(!policy.allows("other.example", "192.168.0.7".parse().unwrap()));
    }

    #[test]
    fn children_never_reach_this_machine_whatever_is_opened() {
        let warden = EgressPolicy::new(&[
            EgressRule::Host("127.0.0.1".into()),
            EgressRule::Host("localhost".into()),
            EgressRule::Network("10.0.0.0".parse().unwrap(), 8),
        ]);
        let children = warden.for_children();
        for ip in ["127.0.0.1", "::ffff:127.0.0.1", "::1", "0.0.0.0", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!children.allows("localhost", ip), "{ip}");
        }
        assert!(warden.allows("localhost", "127.0.0.1".parse().unwrap()));
        assert!(children.allows("internal", "10.1.2.3".parse().unwrap()));
        assert!(children.allows("example.com", "93.184.215.14".parse().unwrap()));
    }

    #[tokio::test]
    async fn refusals_name_the_address_and_the_range() {
        let lookup: Lookup =
            Arc::new(|_| Box::pin(async { Ok(vec!["203.0.113.80".parse().unwrap()]) }));
        let policy = EgressPolicy::with_lookup(&[], lookup);
        let error = policy.addresses("docs.example.test").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "docs.example.test resolves to 203.0.113.80, a documentation range; open it with [egress] allow if it is meant"
        );
        let literal = policy
            .check_url(&url::Url::parse("http://10.1.2.3/").unwrap())
            .unwrap_err();
        assert_eq!(
            literal.to_string(),
            "10.1.2.3 is a private network (RFC 1918); open it with [egress] allow if it is meant"
        );
        let metadata = policy
            .check_url(&url::Url::parse("http://metadata.google.internal/").unwrap())
            .unwrap_err();
        assert!(
            metadata.to_string().contains("a cloud metadata name"),
            "{metadata}"
        );
        let children = policy.for_children();
        let local = children.check_url(&url::Url::parse("http://127.0.0.1/").unwrap());
        assert!(
            local
                .unwrap_err()
                .to_string()
                .contains("this machine, which children never reach")
        );
    }
}
