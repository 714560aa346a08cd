//! The log's way to stderr. An event is formatted where it happens; redacting, escaping
//! and writing it happen on one writer thread, off the request path, in batches of
//! whatever has queued meanwhile (one `write` for many lines under load). Nothing is
//! dropped: a full queue makes the logging thread wait, as a slow stderr did before.

use std::io::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

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
        LogFormat::Human => builder.fmt_fields(PlainFields).init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Err(error) = writer {
        // No thread, no log: say so where a person will look, once.
        eprintln!("warden: cannot start the log writer ({error}); log lines are lost");
    }
    Drained { queue }
}

/// The human format's fields, written as `tracing-subscriber`'s `DefaultFields` writes
/// them without colours, byte for byte, in a fraction of the instructions: its visitor
/// paints every name and `=` through a (colourless) style, and escapes every string
/// character by character. A field that is not plain text (the message, an error, a raw
/// identifier's name) and any writer with colours go to `DefaultFields`' own visitor.
struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: std::fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether this visitor writes `field` itself; the rest go to `DefaultVisitor`.
    fn writes(&self, field: &Field) -> bool {
        let name = field.name();
        !self.writer.has_ansi_escapes() && name != "message" && !name.starts_with("r#")
    }

    /// `name=`, after a space unless it is the first field.
    fn name(&mut self, field: &Field) -> std::fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    /// `DefaultVisitor` writes the field (it pads the way this visitor does).
    fn delegate(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// Fields that carry log records' metadata are written by the formatter already.
    fn skipped(&self, field: &Field) -> bool {
        self.result.is_err() || field.name().starts_with("log.")
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.skipped(field) {
            return;
        }
        if !self.writes(field) {
            return self.delegate(|visitor| visitor.record_str(field, value));
        }
        self.result = self.name(field).and_then(|()| {
            // `{:?}` of text that needs no escape is the text in quotes.
            if value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            } else {
                write!(self.writer, "{value:?}")
            }
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.skipped(field) {
            return;
        }
        self.delegate(|visitor| visitor.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.skipped(field) {
            return;
        }
        if !self.writes(field) {
            return self.delegate(|visitor| visitor.record_debug(field, value));
        }
        self.result = self
            .name(field)
            .and_then(|()| write!(self.writer, "{value:?}"));
    }
}

impl VisitOutput<std::fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> std::fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn std::fmt::Write {
        &mut self.writer
    }
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

    /// Events of every kind of field, formatted by `fields` (no time, no colours).
    fn formatted<F>(fields: F) -> String
    where
        F: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let written = Written::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let written = written.clone();
                move || written.clone()
            })
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(fields)
            .finish();
        let error = std::io::Error::other("disk \"full\"");
        let texts = [
            "plain text",
            "",
            "quote \" inside",
            "back\\slash",
            "it's",
            "tab\tnew\nline",
            "\u{1b}[2J escape",
            "é unicode ✓",
            "\u{301} combining first",
            "\u{7f} delete",
        ];
        tracing::subscriber::with_default(subscriber, || {
            for text in texts {
                tracing::info!(
                    text,
                    number = 7u64,
                    negative = -3i64,
                    flag = true,
                    "message {text}"
                );
                tracing::warn!(r#type = text, shown = %text, debugged = ?text, absent = None::<&str>, present = Some(text));
                tracing::info!(message = text, later = text);
                tracing::error!(
                    error = &error as &(dyn std::error::Error + 'static),
                    after = text,
                    "failed"
                );
                tracing::info!(fraction = 0.25f64, big = u128::MAX, "{}", text);
                let span = tracing::info_span!("call", tool = text, n = 1u64);
                let _entered = span.enter();
                tracing::info!(inside = text);
            }
            tracing::info!(only = "one");
            tracing::info!("just a message");
        });
        String::from_utf8(written.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn plain_fields_are_written_as_the_default_fields_are() {
        let ours = formatted(PlainFields);
        let theirs = formatted(tracing_subscriber::fmt::format::DefaultFields::new());
        assert!(ours.lines().count() >= 60, "{ours}");
        for (ours, theirs) in ours.lines().zip(theirs.lines()) {
            assert_eq!(ours, theirs);
        }
        assert_eq!(ours, theirs);
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
