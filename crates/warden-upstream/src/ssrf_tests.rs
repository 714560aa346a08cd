//! The SSRF table: every target a confused or hostile model might hand Warden, against
//! `import_url` and a remote upstream's URL. A recording listener on 127.0.0.1 must see
//! no connection; the "public" side of the test network (127.0.0.2, opened with
//! `[egress] allow` the way an operator opens an internal host) must keep working.
//!
//! Names are answered by a test resolver, so a name can point anywhere, and one
//! (`rebind.test`) answers public first and private after, as a rebinding DNS server
//! would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use warden_config::{EgressRule, Http};

use crate::http::HttpUpstream;
use crate::link::Link;
use crate::notes::Fetcher;
use warden_egress::{EgressPolicy, Lookup};

/// The test network: a recorder where private targets would land, a page server on the
/// address the test treats as public, on the same port.
struct Network {
    port: u16,
    recorded: Arc<AtomicUsize>,
    public_hits: Arc<AtomicUsize>,
}

async fn network() -> Network {
    loop {
        let recorder = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = recorder.local_addr().unwrap().port();
        let Ok(public) = TcpListener::bind(("127.0.0.2", port)).await else {
            continue;
        };
        let recorded = Arc::new(AtomicUsize::new(0));
        let counter = recorded.clone();
        tokio::spawn(async move {
            while recorder.accept().await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        let public_hits = Arc::new(AtomicUsize::new(0));
        let hits = public_hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = public.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(page);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        return Network {
            port,
            recorded,
            public_hits,
        };
    }
}

/// `/page`: a small HTML page; `/to?<url>`: a redirect to `<url>`; `/loop`: a redirect
/// to itself; anything else: 404.
async fn page(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let mut response = Response::new(Full::new(Bytes::new()));
    match path {
        "/page" => {
            *response.body_mut() = Full::new(Bytes::from(
                "<html><title>Public</title><p>reachable</p></html>",
            ));
            response
                .headers_mut()
                .insert("content-type", "text/html".parse().unwrap());
        }
        "/to" | "/loop" => {
            let target = match request.uri().query() {
                Some(query) if path == "/to" => query.to_owned(),
                _ => "/loop".to_owned(),
            };
            *response.status_mut() = hyper::StatusCode::FOUND;
            response
                .headers_mut()
                .insert("location", target.parse().unwrap());
        }
        _ => *response.status_mut() = hyper::StatusCode::NOT_FOUND,
    }
    Ok(response)
}

/// Names the test network resolves; `rebind.test` answers public once, then loopback.
fn resolver() -> Lookup {
    let answers: HashMap<&str, Vec<&str>> = HashMap::from([
        ("public.test", vec!["127.0.0.2"]),
        ("both.test", vec!["127.0.0.1", "127.0.0.2"]),
        ("localhost", vec!["127.0.0.1", "::1"]),
        ("loopback.test", vec!["127.0.0.1"]),
        ("v6-loopback.test", vec!["::1"]),
        ("mapped.test", vec!["::ffff:127.0.0.1"]),
        ("nat64.test", vec!["64:ff9b::7f00:1"]),
        ("private.test", vec!["10.0.0.7", "192.168.1.7"]),
        ("cgnat.test", vec!["100.64.0.7"]),
        ("metadata-alias.test", vec!["169.254.169.254"]),
        ("link-local6.test", vec!["fe80::1"]),
        ("unique-local.test", vec!["fd12::1"]),
        ("zero.test", vec!["0.0.0.0"]),
    ]);
    let answers: HashMap<String, Vec<IpAddr>> = answers
        .into_iter()
        .map(|(name, ips)| {
            (
                name.to_owned(),
                ips.into_iter().map(|ip| ip.parse().unwrap()).collect(),
            )
        })
        .collect();
    let rebinds = Arc::new(AtomicUsize::new(0));
    Arc::new(move |name: String| {
        let found = if name == "rebind.test" {
            let first = rebinds.fetch_add(1, Ordering::SeqCst) == 0;
            Some(vec![
                if first { "127.0.0.2" } else { "127.0.0.1" }
                    .parse()
                    .unwrap(),
            ])
        } else {
            answers.get(&name).cloned()
        };
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    })
}

/// Every blocked target, written with `{p}` for the test network's port.
const REFUSED: [&str; 62] = [
    // Loopback in every notation the URL parser normalises.
    "http://127.0.0.1:{p}/page",
    "http://127.1:{p}/page",
    "http://127.0.1:{p}/page",
    "http://2130706433:{p}/page",
    "http://0177.0.0.1:{p}/page",
    "http://017700000001:{p}/page",
    "http://0x7f.1:{p}/page",
    "http://0x7f000001:{p}/page",
    "http://0x7f.0.0.1:{p}/page",
    "http://0x7F.0x00.0x00.0x01:{p}/page",
    "http://127.000.000.001:{p}/page",
    "http://127.255.255.254:{p}/page",
    "http://[::1]:{p}/page",
    "http://[0:0:0:0:0:0:0:1]:{p}/page",
    "http://[::ffff:127.0.0.1]:{p}/page",
    "http://[::ffff:7f00:1]:{p}/page",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{p}/page",
    "http://[::127.0.0.1]:{p}/page",
    "http://[64:ff9b::7f00:1]:{p}/page",
    "http://[2002:7f00:1::]:{p}/page",
    "http://[fe80::1%25lo]:{p}/page",
    "http://user:pass@127.0.0.1:{p}/page",
    // Unspecified, private, shared, link-local (metadata), unique-local.
    "http://0.0.0.0:{p}/page",
    "http://0:{p}/page",
    "http://[::]:{p}/page",
    "http://10.0.0.1/page",
    "http://172.16.0.1/page",
    "http://172.31.255.255/page",
    "http://192.168.0.1/page",
    "http://100.64.0.1/page",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "http://[fe80::1]/page",
    "http://[fd00::1]/page",
    "http://[fc00::1]/page",
    "http://[fec0::1]/page",
    // Multicast, broadcast, documentation, benchmarking, reserved.
    "http://224.0.0.1/page",
    "http://239.255.255.250/page",
    "http://[ff02::1]/page",
    "http://255.255.255.255/page",
    "http://192.0.2.1/page",
    "http://198.51.100.1/page",
    "http://203.0.113.1/page",
    "http://[2001:db8::1]/page",
    "http://198.18.0.1/page",
    "http://240.0.0.1/page",
    // Metadata names, whatever they resolve to.
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://metadata.goog/",
    "http://instance-data/latest/",
    // Names the test resolver points at blocked addresses.
    "http://localhost:{p}/page",
    "http://loopback.test:{p}/page",
    "http://v6-loopback.test:{p}/page",
    "http://mapped.test:{p}/page",
    "http://nat64.test:{p}/page",
    "http://private.test/page",
    "http://cgnat.test/page",
    "http://metadata-alias.test/latest/meta-data/",
    "http://link-local6.test/page",
    "http://unique-local.test/page",
    "http://zero.test:{p}/page",
];

/// Redirects from the public page server to blocked places.
const REDIRECTED: [&str; 8] = [
    "http://127.0.0.1:{p}/page",
    "http://0x7f.1:{p}/page",
    "http://[::1]:{p}/page",
    "http://loopback.test:{p}/page",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{p}/_",
];

/// What the test network lets through: the public address and names that reach it
/// (with `both.test`, only its public address is used).
const ALLOWED: [&str; 4] = [
    "http://127.0.0.2:{p}/page",
    "http://public.test:{p}/page",
    "http://both.test:{p}/page",
    "http://public.test:{p}/to?/page",
];

fn at(template: &str, port: u16) -> String {
    template.replace("{p}", &port.to_string())
}

fn policy() -> Arc<EgressPolicy> {
    EgressPolicy::with_lookup(&[EgressRule::Host("127.0.0.2".into())], resolver())
}

#[tokio::test]
async fn import_url_refuses_every_blocked_target_and_reaches_the_public_ones() {
    let net = network().await;
    let policy = policy();
    let fetcher = Fetcher::new(&policy).unwrap();
    let mut refused = 0;
    for template in REFUSED {
        let url = at(template, net.port);
        let error = fetcher.page(&url).await.expect_err(&url);
        // A refusal the model can act on, from the guard, not a network error.
        assert!(
            error.contains("open it with [egress] allow")
                || error.contains("not valid")
                || error.contains("could not be resolved"),
            "{url}: {error}"
        );
        refused += 1;
    }
    for template in REDIRECTED {
        let url = format!(
            "http://public.test:{}/to?{}",
            net.port,
            at(template, net.port)
        );
        let error = fetcher.page(&url).await.expect_err(&url);
        assert!(
            error.starts_with("refused:") || error.contains("HTTP 302"),
            "{url}: {error}"
        );
        refused += 1;
    }
    let endless = format!("http://public.test:{}/loop", net.port);
    let error = fetcher.page(&endless).await.unwrap_err();
    assert!(error.contains("too many redirects"), "{error}");
    for url in [
        "file:///etc/passwd",
        "ftp://127.0.0.2/",
        "gopher://public.test/",
    ] {
        assert!(
            fetcher
                .page(url)
                .await
                .unwrap_err()
                .contains("only http and https")
        );
    }
    assert!(refused >= 60, "{refused} targets");
    assert_eq!(
        net.recorded.load(Ordering::SeqCst),
        0,
        "a blocked target was connected to"
    );

    for template in ALLOWED {
        let url = at(template, net.port);
        let (title, text) = fetcher
            .page(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(title.as_deref(), Some("Public"));
        assert!(text.contains("reachable"));
    }
    // The rebinding name answers public when first asked and private after: the first
    // fetch works, the second is refused, and neither reaches loopback.
    let rebind = at("http://rebind.test:{p}/page", net.port);
    assert!(
        fetcher.page(&rebind).await.is_ok(),
        "first answer is public"
    );
    // A kept-alive connection goes to the address already checked; a fresh client must
    // look the name up again, and gets the private answer.
    let fresh = Fetcher::new(&policy).unwrap();
    let error = fresh.page(&rebind).await.unwrap_err();
    assert!(error.contains("open it with [egress] allow"), "{error}");
    assert_eq!(
        net.recorded.load(Ordering::SeqCst),
        0,
        "the rebinding name got through"
    );
    assert!(net.public_hits.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn a_remote_upstream_at_a_blocked_target_is_never_connected() {
    let net = network().await;
    let policy = policy();
    let (_running, stop) = tokio::sync::watch::channel(false);
    let upstream = |url: String| {
        HttpUpstream::new(
            "remote".into(),
            &Http {
                url,
                headers: Vec::new(),
                transport: warden_config::HttpTransport::Streamable,
                pins: Vec::new(),
            },
            warden_proto::cut::MessageLimits::whole(1 << 20),
            Link::unsolicited_channel(),
            &policy,
            stop.clone(),
        )
    };
    for template in REFUSED {
        let url = at(template, net.port).replace("/page", "/mcp");
        if let Ok(remote) = upstream(url.clone()) {
            // A name passes the URL check; it is refused when resolved.
            assert!(remote.ready().await.is_err(), "{url}");
        }
    }
    assert_eq!(
        net.recorded.load(Ordering::SeqCst),
        0,
        "a blocked target was connected to"
    );
    assert_eq!(net.public_hits.load(Ordering::SeqCst), 0);

    // The public address is reached (the page server is no MCP server: it answers 404).
    let before = net.public_hits.load(Ordering::SeqCst);
    let remote = upstream(at("http://public.test:{p}/mcp", net.port)).unwrap();
    assert!(remote.ready().await.is_err());
    assert!(net.public_hits.load(Ordering::SeqCst) > before);
    assert_eq!(net.recorded.load(Ordering::SeqCst), 0);
}
