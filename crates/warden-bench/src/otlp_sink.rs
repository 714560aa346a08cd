//! An OTLP/HTTP traces receiver for the tracing benchmark: takes every export, answers as
//! a collector does (an empty `ExportTraceServiceResponse`), and counts what it took, so
//! that the benchmark can show the spans were really sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::{get, post};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[derive(Default)]
struct Taken {
    exports: AtomicU64,
    bytes: AtomicU64,
}

pub fn run(args: Args) -> Result<(), crate::Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let taken = Arc::new(Taken::default());
        let counted = taken.clone();
        let app = Router::new()
            .route(
                "/v1/traces",
                post(move |body: axum::body::Bytes| async move {
                    counted.exports.fetch_add(1, Ordering::Relaxed);
                    counted
                        .bytes
                        .fetch_add(body.len() as u64, Ordering::Relaxed);
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }),
            )
            // What was taken so far, for the benchmark's report.
            .route(
                "/taken",
                get(move || async move {
                    axum::Json(json!({
                        "exports": taken.exports.load(Ordering::Relaxed),
                        "bytes": taken.bytes.load(Ordering::Relaxed),
                    }))
                }),
            );
        axum::serve(listener, app).await?;
        Ok(())
    })
}
