//! The scaling curves (`scripts/bench-scaling.sh`): `fill-keys` puts a million keys in a
//! stopped Warden's key store, and `plot` draws what the runs measured as SVG, one chart
//! per dimension (tools in the catalogue, keys, sessions, argument size).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use rand::RngCore as _;
use serde_json::Value;

use crate::Failure;

#[derive(Debug, clap::Args)]
pub struct FillKeysArgs {
    /// The data directory of a Warden that is not running.
    #[arg(long)]
    data_dir: PathBuf,
    /// Keys added (revocable, never presented: they only make the store large).
    #[arg(long)]
    keys: usize,
}

/// Adds `keys` keys to `keys.db` in one transaction. Their hashes are random bytes: no
/// one holds them, as with most keys of a large store at any moment. Going through
/// `KeyStore::add` would cost a commit per key (minutes for a million).
pub fn fill_keys(args: FillKeysArgs) -> Result<(), Failure> {
    let path = args.data_dir.join("keys.db");
    if !path.exists() {
        return Err(format!("{}: no key store (start Warden once)", path.display()).into());
    }
    let mut conn = rusqlite::Connection::open(&path)?;
    let created_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let transaction = conn.transaction()?;
    {
        let mut insert = transaction.prepare(
            "INSERT INTO keys (id, hash, tenant, name, scope, created_at) VALUES (?1, ?2, ?3, ?4, 'read', ?5)",
        )?;
        let mut rng = rand::rng();
        for i in 0..args.keys {
            let mut hash = [0u8; 32];
            rng.fill_bytes(&mut hash);
            // A thousand tenants, as a large installation might have.
            insert.execute(rusqlite::params![
                format!("key_fill{i:012x}"),
                hash.as_slice(),
                format!("tenant{}", i % 1000),
                format!("filler {i}"),
                created_at,
            ])?;
        }
    }
    transaction.commit()?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Results, one JSON object a line: `dimension`, `x`, `cpu_us_per_call`.
    #[arg(long)]
    input: PathBuf,
    /// Where the charts go, one `scaling-<dimension>.svg` each.
    #[arg(long)]
    out: PathBuf,
}

/// What each dimension's axis says.
fn axis_label(dimension: &str) -> &'static str {
    match dimension {
        "tools" => "tools in the catalogue",
        "keys" => "keys in the store",
        "sessions" => "legacy sessions the calls go to",
        "args" => "argument size (bytes)",
        _ => "x",
    }
}

pub fn plot(args: PlotArgs) -> Result<(), Failure> {
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for line in std::fs::read_to_string(&args.input)?.lines() {
        let point: Value = serde_json::from_str(line)?;
        let (Some(dimension), Some(x), Some(cpu)) = (
            point["dimension"].as_str(),
            point["x"].as_f64(),
            point["cpu_us_per_call"].as_f64(),
        ) else {
            return Err(format!(
                "{}: a line without dimension, x or CPU: {line}",
                args.input.display()
            )
            .into());
        };
        series
            .entry(dimension.to_owned())
            .or_default()
            .push((x, cpu));
    }
    for (dimension, mut points) in series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        draw(
            &args.out.join(format!("scaling-{dimension}.svg")),
            &dimension,
            &points,
        )?;
    }
    Ok(())
}

fn draw(path: &Path, dimension: &str, points: &[(f64, f64)]) -> Result<(), Failure> {
    let (first, last) = match (points.first(), points.last()) {
        (Some(first), Some(last)) if first.0 > 0.0 => (first.0, last.0),
        _ => return Err(format!("{dimension}: no points with x > 0").into()),
    };
    let top = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (640, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Warden CPU per tools/call by {}", axis_label(dimension)),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((first * 0.8..last * 1.25).log_scale(), 0.0..top.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc(axis_label(dimension))
        .y_desc("CPU per call (µs)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart.draw_series(LineSeries::new(points.iter().copied(), &BLUE))?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 4, BLUE.filled())),
    )?;
    root.present()?;
    Ok(())
}
