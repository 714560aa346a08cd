//! The scanner's stdio peer: the server as a child process, newline-delimited JSON-RPC
//! on its stdin and stdout. Answers are matched to requests by id; what the server asks
//! of the client is refused (the scan declares no capability); stderr is drained and
//! dropped. The child is killed when the peer goes.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::oneshot;

use crate::http::{Exchange, Request};

/// The longest line kept from the server.
const MAX_LINE: usize = 4 << 20;

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<(String, Value)>>>>;

pub struct StdioPeer {
    stdin: tokio::sync::Mutex<ChildStdin>,
    waiting: Waiting,
    timeout: Duration,
    progress: Option<crate::Progress>,
    _child: Child,
}

impl std::fmt::Debug for StdioPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioPeer").finish_non_exhaustive()
    }
}

impl StdioPeer {
    pub fn start(
        command: &[String],
        timeout: Duration,
        progress: Option<crate::Progress>,
    ) -> std::io::Result<Self> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| std::io::Error::other("no command"))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(_)) = lines.next_line().await {}
            });
        }
        let waiting: Waiting = Arc::default();
        let stdin = tokio::sync::Mutex::new(stdin);
        tokio::spawn(read_answers(stdout, waiting.clone()));
        Ok(Self {
            stdin,
            waiting,
            timeout,
            progress,
            _child: child,
        })
    }

    /// Writes the request's body as one line; waits for the answer with the same id (a
    /// notification gets none: 202, as over HTTP).
    pub async fn send(&self, request: &Request) -> Exchange {
        if let Some(progress) = &self.progress {
            progress(&request.label);
        }
        let line_of_request = format!("stdio {}", request.label);
        let body = request.body.clone().unwrap_or_default();
        let id = id_of(&body);
        let answer = id.as_ref().map(|id| {
            let (tx, rx) = oneshot::channel();
            self.waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id.clone(), tx);
            rx
        });
        let written = {
            let mut stdin = self.stdin.lock().await;
            let line = format!("{}\n", body.replace('\n', " "));
            match stdin.write_all(line.as_bytes()).await {
                Ok(()) => stdin.flush().await,
                Err(error) => Err(error),
            }
        };
        if let Err(error) = written {
            return Exchange {
                request: line_of_request,
                error: Some(format!("the server's stdin is closed: {error}")),
                ..Exchange::default()
            };
        }
        let Some(answer) = answer else {
            return Exchange {
                request: line_of_request,
                status: 202,
                ..Exchange::default()
            };
        };
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok((line, message))) => Exchange {
                request: line_of_request,
                status: 200,
                headers: Vec::new(),
                body: line,
                error: None,
                message: Some(message),
            },
            Ok(Err(_)) => Exchange {
                request: line_of_request,
                error: Some("the server exited".into()),
                ..Exchange::default()
            },
            Err(_) => {
                if let Some(id) = &id {
                    self.waiting
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(id);
                }
                Exchange {
                    request: line_of_request,
                    error: Some("timed out".into()),
                    ..Exchange::default()
                }
            }
        }
    }
}

/// The id of a request the scan wrote, as JSON text (`"scan-3"`). Read from the text:
/// a probe's body may be nested past what a JSON parser takes, and the scan writes the
/// id before the params.
fn id_of(body: &str) -> Option<String> {
    let rest = &body[body.find("\"id\":")? + "\"id\":".len()..];
    let rest = rest.trim_start();
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"')? + 2
    } else {
        rest.find(|c: char| !c.is_ascii_digit())?
    };
    Some(rest[..end].to_owned())
}

/// Hands each answer to the request waiting for its id; answers the server's own
/// requests with a refusal (the scan is a client with no capabilities).
async fn read_answers(stdout: tokio::process::ChildStdout, waiting: Waiting) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.len() > MAX_LINE {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = message.get("id").map(Value::to_string) else {
            continue;
        };
        if message.get("method").is_some() {
            // A request of the server's: ignored (nothing waits on it); the server's own
            // timeout ends it. Declaring no capability, the scan should get none.
            continue;
        }
        let waiter = waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send((line, message));
        }
    }
    // The server closed its stdout: every waiting request learns it.
    waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_read_from_the_scan_s_own_bodies() {
        assert_eq!(
            super::id_of(r#"{"jsonrpc":"2.0","id":"scan-3","method":"ping"}"#).as_deref(),
            Some("\"scan-3\"")
        );
        assert_eq!(
            super::id_of(r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).as_deref(),
            Some("7")
        );
        assert_eq!(
            super::id_of(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":"scan-9","params":{}{}}}"#,
            "[".repeat(1000),
            "]".repeat(1000)
        );
        assert_eq!(super::id_of(&deep).as_deref(), Some("\"scan-9\""));
    }
}
