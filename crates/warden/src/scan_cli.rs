//! `warden scan`: grade an MCP server over HTTP, audit a Warden configuration, or compare
//! a server reached directly with the same server behind Warden.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use warden_scan::{Grade, Report, ScanOptions, Selection};

use crate::Failure;

#[derive(Args)]
pub(crate) struct ScanArgs {
    /// The MCP endpoint to scan (Streamable HTTP; both eras are tried).
    #[arg(value_name = "URL", required_unless_present_any = ["config", "compare", "list_rules", "stdio"])]
    url: Option<String>,
    /// Scan a server that speaks over stdio: the command after `--` is started, spoken
    /// to, and stopped.
    #[arg(long, requires = "command", conflicts_with_all = ["url", "config", "compare"])]
    stdio: bool,
    /// The stdio server's command and its arguments (after `--`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
    /// Audit this warden.toml instead of scanning a server (nothing is started).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["url", "compare"])]
    config: Option<PathBuf>,
    /// Scan two endpoints (the server direct, then behind Warden) and show what differs.
    #[arg(long, num_args = 2, value_names = ["URL_DIRECT", "URL_THROUGH_WARDEN"], conflicts_with = "url")]
    compare: Vec<String>,
    /// A header sent with every request that carries credentials, `Name: value`;
    /// `Name: env:VAR` reads the value from the environment. Repeatable.
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    headers: Vec<String>,
    /// Also call each read-only tool once, with arguments its input schema accepts, to
    /// judge what it returns. Tools that may change anything are never called with valid
    /// arguments.
    #[arg(long, conflicts_with = "config")]
    allow_calls: bool,
    /// Trust the CA certificates in this PEM file besides the system's (a server whose
    /// certificate a private CA signed).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "stdio"])]
    ca_cert: Option<PathBuf>,
    /// Seconds each request may take.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
    /// Only these rules: ids (WS-AUTH-001), id prefixes (WS-AUTH) or families
    /// (authentication); comma-separated or repeated.
    #[arg(long, value_name = "RULES", value_delimiter = ',')]
    only: Vec<String>,
    /// Leave these rules out (same forms as --only).
    #[arg(long, value_name = "RULES", value_delimiter = ',')]
    skip: Vec<String>,
    /// Print every rule with its family, severity and weight, and exit.
    #[arg(long)]
    list_rules: bool,
    /// How the report is written.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Exit with status 1 when the grade is below this one (A, B, C, D, F).
    #[arg(long, value_name = "GRADE", value_parser = parse_grade)]
    fail_under: Option<Grade>,
    /// Show why skipped rules were skipped.
    #[arg(long)]
    verbose: bool,
}

const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Sarif,
}

fn parse_grade(text: &str) -> Result<Grade, String> {
    Grade::parse(text).ok_or_else(|| format!("{text:?} is not a grade (A, B, C, D or F)"))
}

/// `Name: value`, with `env:VAR` values read from the environment.
fn header(text: &str) -> Result<(String, String), Failure> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("--header {:?}: expected `Name: value`", name_only(text)))?;
    let (name, value) = (name.trim(), value.trim());
    let value = match value.strip_prefix("env:") {
        Some(var) => std::env::var(var)
            .map_err(|_| format!("--header {name}: the environment variable {var} is not set"))?,
        None => value.to_owned(),
    };
    Ok((name.to_owned(), value))
}

/// What may be shown of a malformed header: never what may be its secret value.
fn name_only(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

pub(crate) fn run(args: ScanArgs) -> Result<(), Failure> {
    if args.list_rules {
        say!("{}", warden_scan::report::rule_table().trim_end());
        return Ok(());
    }
    let selection = Selection {
        only: args.only.clone(),
        skip: args.skip.clone(),
    };
    let unknown = selection.unknown();
    if !unknown.is_empty() {
        return Err(format!(
            "--only/--skip name no rule: {} (see warden scan --list-rules)",
            unknown.join(", ")
        )
        .into());
    }
    let headers = args
        .headers
        .iter()
        .map(|h| header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let ca_pem = match &args.ca_cert {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("--ca-cert {}: {e}", path.display()))?;
            if !pem
                .windows(PEM_CERTIFICATE.len())
                .any(|w| w == PEM_CERTIFICATE)
            {
                return Err(format!(
                    "--ca-cert {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                    path.display()
                )
                .into());
            }
            Some(pem)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = |target: &str| {
        let progress = progress_line(target);
        let options = ScanOptions {
            headers: headers.clone(),
            timeout,
            selection: selection.clone(),
            allow_calls: args.allow_calls,
            ca_pem: ca_pem.clone(),
            progress: Some(Arc::new({
                let progress = progress.clone();
                move |label: &str| {
                    progress.inc(1);
                    progress.set_message(label.to_owned());
                }
            })),
        };
        (options, progress)
    };
    let scan_url = |url: &str| -> Result<Report, Failure> {
        let url = url::Url::parse(url).map_err(|_| format!("{url:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{url} is not an http(s) URL").into());
        }
        let (options, progress) = options(url.as_str());
        let report = runtime.block_on(warden_scan::scan_http(&url, &options));
        progress.finish_and_clear();
        report.map_err(|e| match &args.ca_cert {
            Some(path) => {
                format!("--ca-cert {}: not a PEM certificate ({e})", path.display()).into()
            }
            None => Failure::from(e),
        })
    };
    let (report, text) = if let Some(path) = &args.config {
        let config = warden_config::Config::load(Some(path), &warden_config::Overrides::default())?;
        let report = warden_scan::audit_config(config, &path.display().to_string(), &selection);
        let text = render(&report, args.format, args.verbose);
        (report, text)
    } else if args.stdio {
        let (options, progress) = options(&args.command.join(" "));
        let report = runtime.block_on(warden_scan::scan_stdio(&args.command, &options));
        progress.finish_and_clear();
        let text = render(&report, args.format, args.verbose);
        (report, text)
    } else if let [direct, through] = args.compare.as_slice() {
        let before = scan_url(direct)?;
        let after = scan_url(through)?;
        let text = match args.format {
            Format::Table => warden_scan::report::compare(&before, &after),
            Format::Json => serde_json::to_string_pretty(&serde_json::json!({
                "direct": warden_scan::report::json(&before),
                "through_warden": warden_scan::report::json(&after),
            }))?,
            Format::Sarif => render(&after, Format::Sarif, false),
        };
        (after, text)
    } else {
        let url = args.url.as_deref().unwrap_or_default();
        let report = scan_url(url)?;
        let text = render(&report, args.format, args.verbose);
        (report, text)
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, format!("{}\n", text.trim_end()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("{}", warden_scan::report::headline(&report));
        }
        None => say!("{}", text.trim_end()),
    }
    if let Some(floor) = args.fail_under
        && report.scored.grade > floor
    {
        return Err(format!(
            "grade {} is below {} (--fail-under)",
            report.scored.grade.letter(),
            floor.letter()
        )
        .into());
    }
    Ok(())
}

/// A live line on a terminal: the requests sent so far and the latest one. Off a
/// terminal (CI logs, pipes) the scan says once what it scans and nothing more.
fn progress_line(target: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        eprintln!("scanning {target} …");
        return ProgressBar::hidden();
    }
    let line = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} scanning {prefix} · {pos} requests · {wide_msg}")
    {
        line.set_style(style);
    }
    line.set_prefix(target.to_owned());
    line.enable_steady_tick(Duration::from_millis(120));
    line
}

fn render(report: &Report, format: Format, verbose: bool) -> String {
    match format {
        Format::Table => warden_scan::report::table(report, verbose),
        Format::Json => {
            serde_json::to_string_pretty(&warden_scan::report::json(report)).unwrap_or_default()
        }
        Format::Sarif => {
            serde_json::to_string_pretty(&warden_scan::report::sarif(report)).unwrap_or_default()
        }
    }
}
