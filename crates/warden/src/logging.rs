//! The log's way to stderr. An event is formatted where it happens; redacting, escaping
//! and writing it happen on one writer thread, off the request path, in batches of
//! whatever has queued meanwhile (one `write` for many lines under load). Nothing is
//! dropped: a full queue makes the logging thread wait, as a slow stderr did before.

use std::io::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use crate::LogFormat;

/// Lines queued for the writer before an event waits for room.
const QUEUE_LINES: usize = 4096;
/// How long the writer lets lines gather after writing some. Under load the next lines
/// are then already queued when it looks, so an event only queues its line, and the
/// writer is woken once per batch instead of once per line (a futex wake and a context
/// switch each, a few per cent of a call's CPU). A line reaches stderr at most this much
/// later than it would otherwise.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// How long the end of `serve` waits for the writer to drain the queue: a stderr that
/// nobody reads must not hold a stopping Warden forever.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Installs the global subscriber (`WARDEN_LOG` filter, default `info`) with the writer
/// thread behind it. Keep the guard while the process logs: dropping it writes out every
/// line queued so far.
pub fn init(format: LogFormat) -> Drained {
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    let writer = std::thread::Builder::new()
        .name("warden-log".into())
        .spawn(move || write_lines(&lines, std::io::stderr()));
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LineQueue {
            queue: queue.clone(),
        })
        // No colours: escape sequences are escaped on the way out (see `clean`).
        .with_ansi(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Err(error) = writer {
        // No thread, no log: say so where a person will look, once.
        eprintln!("warden: cannot start the log writer ({error}); log lines are lost");
    }
    Drained { queue }
}

/// Writes out what is queued when dropped (see [`init`]).
pub struct Drained {
    queue: mpsc::SyncSender<Message>,
}

impl Drop for Drained {
    fn drop(&mut self) {
        let (done, written) = mpsc::sync_channel(1);
        if self.queue.send(Message::Drain(done)).is_ok() {
            let _ = written.recv_timeout(DRAIN_WAIT);
        }
    }
}

enum Message {
    /// One event's bytes, as the formatter made them.
    Line(Vec<u8>),
    /// Write out everything before this, then answer.
    Drain(mpsc::SyncSender<()>),
}

/// The subscriber's writer: each event gets a buffer that is queued whole when the
/// event is done.
struct LineQueue {
    queue: mpsc::SyncSender<Message>,
}

struct QueuedLine<'a> {
    line: Vec<u8>,
    queue: &'a mpsc::SyncSender<Message>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineQueue {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine {
            line: Vec::with_capacity(256),
            queue: &self.queue,
        }
    }
}

impl std::io::Write for QueuedLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let _ = self
                .queue
                .send(Message::Line(std::mem::take(&mut self.line)));
        }
    }
}

/// The writer thread: waits for a line, takes every other one already queued, writes
/// them with one flush, and lets the next ones gather for [`BATCH_WINDOW`].
fn write_lines(lines: &mpsc::Receiver<Message>, to: impl std::io::Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, to);
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        let mut drained = Vec::new();
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(clean(&line).as_bytes());
                }
                Message::Drain(done) => drained.push(done),
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
        for done in drained {
            let _ = done.send(());
        }
        std::thread::sleep(BATCH_WINDOW);
    }
}

/// One event as it may reach stderr: the redaction rules applied, and one line whatever
/// its fields held (a newline or an escape sequence in a client's method, an upstream's
/// tool name or stderr is written escaped, never raw).
fn clean(line: &[u8]) -> String {
    let line = String::from_utf8_lossy(line);
    let (body, end) = line
        .strip_suffix('\n')
        .map_or((&*line, ""), |body| (body, "\n"));
    let redacted = warden_redact::text(body);
    let escaped = warden_redact::escape_controls(&redacted);
    format!("{escaped}{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_redacted_and_stays_one_line() {
        let planted = "key=wdn_0123456789abcdef0123456789abcdef\u{1b}[2J\nforged line\n";
        let out = clean(planted.as_bytes());
        assert!(!out.contains("0123456789abcdef0123456789abcdef"), "{out}");
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.ends_with("forged line\n"), "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
    }

    /// What the writer thread wrote, readable while it runs.
    #[derive(Clone, Default)]
    struct Written(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_drain_is_answered_once_every_line_before_it_is_written_in_order() {
        let (queue, lines) = mpsc::sync_channel(8);
        let written = Written::default();
        let writer = {
            let written = written.clone();
            std::thread::spawn(move || write_lines(&lines, written))
        };
        // More lines than the queue holds: the sender waits rather than drops.
        for n in 0..100 {
            queue
                .send(Message::Line(format!("line {n}\n").into_bytes()))
                .unwrap();
        }
        let (done, drained) = mpsc::sync_channel(1);
        queue.send(Message::Drain(done)).unwrap();
        drained.recv_timeout(Duration::from_secs(10)).unwrap();
        let expected: String = (0..100).map(|n| format!("line {n}\n")).collect();
        assert_eq!(
            String::from_utf8(written.0.lock().unwrap().clone()).unwrap(),
            expected
        );
        drop(queue);
        writer.join().unwrap();
    }
}
