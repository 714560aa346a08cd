//! `warden-bench egress-proxy`: what a stdio child's egress proxy costs its requests.
//! A local page server (1 KiB answers) is fetched three ways, at the same concurrency,
//! in the same run: directly (the baseline), through a `CONNECT` tunnel (how HTTPS goes:
//! one guard check per tunnel, then bytes copied), and as absolute-form plain HTTP
//! (one guard check and one fresh destination connection per request).

use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use warden_config::EgressRule;
use warden_egress::EgressPolicy;
use warden_egress::proxy::EgressProxy;

use crate::{Failure, micros, percentile};

#[derive(Clone, Copy)]
enum Route {
    Direct,
    Tunnel,
    Forward,
}

pub fn run(requests: usize, concurrency: usize) -> Result<(), Failure> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let page = listener.local_addr()?;
        let body = "x".repeat(1024);
        let app = axum::Router::new().route("/", axum::routing::get(move || async move { body }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy = EgressProxy::start(
            EgressPolicy::new(&[EgressRule::Host("127.0.0.1".into())]),
            "bench".into(),
            None,
        )
        .await?;
        println!(
            "egress proxy: {requests} GETs of 1 KiB at concurrency {concurrency} (each route warmed first)"
        );
        let mut baseline = 0.0;
        for (name, route) in [
            ("direct", Route::Direct),
            ("CONNECT tunnel", Route::Tunnel),
            ("absolute-form HTTP", Route::Forward),
        ] {
            drive(route, page.port(), proxy.port(), concurrency * 10, concurrency).await?;
            let (rate, mut latencies) =
                drive(route, page.port(), proxy.port(), requests, concurrency).await?;
            latencies.sort();
            if matches!(route, Route::Direct) {
                baseline = rate;
            }
            println!(
                "  {name:<20} {rate:>9.0} req/s  ({:.2}x direct)  p50 {}  p99 {}",
                rate / baseline,
                micros(percentile(&latencies, 0.5)),
                micros(percentile(&latencies, 0.99)),
            );
        }
        Ok(())
    })
}

/// `requests` GETs over `concurrency` connections; the rate and every latency.
async fn drive(
    route: Route,
    page: u16,
    proxy: u16,
    requests: usize,
    concurrency: usize,
) -> Result<(f64, Vec<Duration>), Failure> {
    let started = Instant::now();
    let per_connection = requests.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        tasks.push(tokio::spawn(connection(route, page, proxy, per_connection)));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.extend(task.await?.map_err(|error| error.to_string())?);
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, latencies))
}

type TaskResult = Result<Vec<Duration>, Box<dyn std::error::Error + Send + Sync>>;

async fn connection(route: Route, page: u16, proxy: u16, requests: usize) -> TaskResult {
    let target = format!("127.0.0.1:{page}");
    let (stream, uri) = match route {
        Route::Direct => (TcpStream::connect(&target).await?, "/".to_owned()),
        Route::Tunnel => {
            let mut stream = TcpStream::connect(("127.0.0.1", proxy)).await?;
            stream
                .write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )
                .await?;
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0_u8; 1];
                stream.read_exact(&mut byte).await?;
                head.push(byte[0]);
            }
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(
                    format!("the tunnel was refused: {}", String::from_utf8_lossy(&head)).into(),
                );
            }
            (stream, "/".to_owned())
        }
        Route::Forward => (
            TcpStream::connect(("127.0.0.1", proxy)).await?,
            format!("http://{target}/"),
        ),
    };
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(driver);
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        let request = hyper::Request::get(uri.as_str())
            .header("host", target.as_str())
            .body(Empty::<Bytes>::new())?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let body = response.into_body().collect().await?.to_bytes();
        if body.len() != 1024 {
            return Err("a short answer".into());
        }
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}
