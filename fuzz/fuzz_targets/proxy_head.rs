//! The egress proxy's request heads: any bytes a stdio child writes to its proxy port,
//! read by the same HTTP/1 reader the proxy uses, then judged and rewritten by the
//! proxy's own functions, and the destination's name resolved through the guard.
//!
//! Invariants:
//! - a target is a bare host (no userinfo, path, space or control character) with the
//!   port a `CONNECT` names, or an absolute `http://` URL's (80 when it names none);
//! - the head sent on is in origin form, carries no hop-by-hop header (nor any the
//!   client listed in `Connection`, nor its proxy credentials), keeps every other
//!   header, and its `Host` names the destination without userinfo;
//! - the guard hands back only addresses that are open, whatever the resolver says.

#![no_main]

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, HOST, HeaderMap};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use warden_egress::proxy::{destination_head, http1_server, target};
use warden_egress::{EgressPolicy, Lookup, is_blocked};

/// The oracle's own list (RFC 9110 §7.6.1 and the proxy credentials), written apart
/// from the proxy's on purpose, so a name missing there is caught here.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
}

/// The request heads the proxy's reader makes of `bytes`, in order.
async fn heads(bytes: &[u8]) -> Vec<Parts> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = {
        let seen = seen.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (mut parts, _) = request.into_parts();
            // A pending upgrade would hold the connection open; answered as a refused
            // destination is, a CONNECT is not upgraded and the next request follows.
            parts.extensions.clear();
            seen.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(parts);
            let mut refused = Response::new(Empty::<Bytes>::new());
            *refused.status_mut() = StatusCode::FORBIDDEN;
            async { Ok::<_, Infallible>(refused) }
        })
    };
    let (client, server) = tokio::io::duplex(16 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(client);
    let connection = http1_server()
        .serve_connection(TokioIo::new(server), service)
        .with_upgrades();
    let write = async {
        let _ = to_server.write_all(bytes).await;
        let _ = to_server.shutdown().await;
    };
    let drain = async {
        let mut answers = Vec::new();
        let _ = from_server.read_to_end(&mut answers).await;
    };
    let _ = tokio::join!(connection, write, drain);
    let heads = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    heads
}

fn check_target(parts: &Parts) -> Option<(String, u16)> {
    let (host, port) = target(&parts.method, &parts.uri)?;
    assert!(!host.is_empty(), "an empty host from {}", parts.uri);
    assert!(
        !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@/?#\\".contains(c)),
        "{host:?} from {}",
        parts.uri
    );
    let authority = parts.uri.authority().expect("a target has an authority");
    if parts.method == Method::CONNECT {
        assert_eq!(Some(port), authority.port_u16(), "CONNECT names its port");
    } else {
        assert_eq!(parts.uri.scheme_str(), Some("http"));
        assert_eq!(port, authority.port_u16().unwrap_or(80));
    }
    Some((host, port))
}

fn check_destination_head(mut parts: Parts) {
    let before: HeaderMap = parts.headers.clone();
    let listed: Vec<String> = before
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let authority = parts.uri.authority().expect("a target has an authority");
    let destination = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port.as_str()),
        None => authority.host().to_owned(),
    };
    destination_head(&mut parts);
    assert!(parts.uri.scheme().is_none() && parts.uri.authority().is_none());
    assert!(parts.uri.path().starts_with('/'), "{}", parts.uri);
    // `Host` is the proxy's own to set, whatever `Connection` lists.
    let hop_names = HOP_BY_HOP
        .iter()
        .copied()
        .chain(listed.iter().map(String::as_str));
    for name in hop_names.filter(|name| *name != "host") {
        assert!(!parts.headers.contains_key(name), "{name} was sent on");
    }
    let host = parts.headers.get(HOST).expect("a Host header");
    assert_eq!(
        host.as_bytes(),
        destination.as_bytes(),
        "Host names the destination"
    );
    for (name, value) in &before {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str());
        if !hop && name != HOST {
            assert!(
                parts.headers.get_all(name).iter().any(|kept| kept == value),
                "{name} was dropped"
            );
        }
    }
}

/// Addresses a resolver might answer with, chosen by the input.
fn answers(bytes: &[u8]) -> Vec<IpAddr> {
    bytes
        .chunks(5)
        .map(|chunk| match chunk {
            [0, rest @ ..] => {
                let mut segments = [0_u16; 8];
                for (i, byte) in rest.iter().enumerate() {
                    segments[i * 2 % 8] = u16::from(*byte) << 8 | u16::from(*byte);
                }
                IpAddr::V6(Ipv6Addr::from(segments))
            }
            [a, b, c, d, ..] => IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)),
            other => IpAddr::V4(Ipv4Addr::new(other[0], 0, 0, 1)),
        })
        .collect()
}

async fn check_guard(host: &str, resolved: Vec<IpAddr>) {
    let lookup: Lookup = Arc::new(move |_| {
        let resolved = resolved.clone();
        Box::pin(async move { Ok(resolved) })
    });
    let policy = EgressPolicy::with_lookup(&[], lookup);
    if let Ok(addresses) = policy.addresses(host).await {
        assert!(!addresses.is_empty());
        for ip in addresses {
            assert!(!is_blocked(ip), "{host} was let through to {ip}");
        }
    }
    let children = policy.for_children();
    if let Ok(addresses) = children.addresses(host).await {
        for ip in addresses {
            assert!(!is_blocked(ip) && !ip.is_loopback(), "a child reached {ip}");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    // The first byte says how many of the last bytes are the resolver's answers.
    let Some((&split, rest)) = input.split_first() else {
        return;
    };
    let split = rest.len().saturating_sub(usize::from(split % 64));
    let (stream, resolver) = rest.split_at(split);
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            for parts in heads(stream).await {
                if let Some((host, _)) = check_target(&parts) {
                    check_guard(&host, answers(resolver)).await;
                    if parts.method != Method::CONNECT {
                        check_destination_head(parts);
                    }
                }
            }
        });
    });
});
