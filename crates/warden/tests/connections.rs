//! Connection-level defences over raw TCP: the cap on open connections, the header-read
//! clock (slow-loris and idle keep-alive), and the body-read clock.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::Warden;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: only a server that never closes the connection runs into it.
const PATIENCE: Duration = Duration::from_secs(15);

fn address(warden: &Warden) -> String {
    warden
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Reads one response (head and a Content-Length body), or `None` if the connection
/// closes first.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return Some(text);
            }
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("no response and no close");
        match read {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits until the server closes the connection, reading and dropping anything it sends.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

const SMALL_REQUEST: &[u8] = b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn a_slow_or_idle_connection_is_closed_by_the_header_clock() {
    let warden = Warden::start_config("[server]\nheader_read_timeout_ms = 300\n");
    let address = address(&warden);

    // Slow-loris: a request head that never ends.
    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: a")
        .await
        .unwrap();
    assert!(closed_by_server(&mut slow).await);

    // A kept-alive connection that goes quiet after its answer.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(SMALL_REQUEST).await.unwrap();
    let answer = read_response(&mut idle).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(closed_by_server(&mut idle).await);

    // The server still answers new connections.
    let mut fresh = TcpStream::connect(&address).await.unwrap();
    fresh.write_all(SMALL_REQUEST).await.unwrap();
    assert!(read_response(&mut fresh).await.is_some());
}

#[tokio::test]
async fn a_body_that_trickles_is_cut_off_with_408() {
    let warden = Warden::start_config("[server]\nbody_read_timeout_ms = 300\n");
    let mut stream = TcpStream::connect(address(&warden)).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 200\r\n\r\n{{\"jsonrpc\":",
        warden.admin_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 300 ms"), "{answer}");
    assert!(closed_by_server(&mut stream).await);
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_wait_until_one_closes() {
    let warden = Warden::start_config("[server]\nmax_connections = 2\n");
    let address = address(&warden);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(SMALL_REQUEST).await.unwrap();
        assert!(read_response(&mut stream).await.is_some());
        held.push(stream);
    }

    // The kernel completes the TCP handshake, but Warden does not take the connection.
    let mut waiting = TcpStream::connect(&address).await.unwrap();
    waiting.write_all(SMALL_REQUEST).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut byte)).await;
    assert!(early.is_err(), "answered past the connection cap");

    drop(held.pop());
    let answer = read_response(&mut waiting).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
