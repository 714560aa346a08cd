//! Small bar charts as SVG, drawn on the server: no script, readable by a screen reader
//! (each chart has a title and a summary).

use maud::{Markup, html};

const WIDTH: u64 = 600;
const HEIGHT: u64 = 150;
/// Room at the bottom for the time axis.
const AXIS: u64 = 18;

/// Colours for stacked series, dark enough to read on white.
const PALETTE: [&str; 8] = [
    "#0b5cad", "#a40e26", "#7a4a00", "#116329", "#6f42c1", "#b35900", "#1b7c83", "#4a5361",
];

pub(crate) fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// A bar per slot; each bar stacks `series` (name, one value per slot).
pub(crate) fn stacked(id: &str, title: &str, series: &[(String, Vec<u64>)]) -> Markup {
    let slots = series.first().map_or(0, |(_, values)| values.len()).max(1) as u64;
    let sums: Vec<u64> = (0..slots as usize)
        .map(|slot| {
            series
                .iter()
                .map(|(_, values)| values.get(slot).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let peak = sums.iter().copied().max().unwrap_or(0);
    // The bars' scale: the peak, or 1 when nothing happened (no division by zero).
    let scale = peak.max(1);
    let total: u64 = sums.iter().sum();
    let plot = HEIGHT - AXIS;
    let step = WIDTH / slots;
    let summary = format!("{total} in the last hour; at most {peak} in a minute");
    // Each bar's pieces, bottom up: x, y, height, colour.
    let mut pieces = Vec::new();
    for slot in 0..slots {
        let mut base = plot;
        for (index, (_, values)) in series.iter().enumerate() {
            let value = values.get(slot as usize).copied().unwrap_or(0);
            if value == 0 {
                continue;
            }
            let height = (value * plot).div_ceil(scale).min(base);
            base -= height;
            pieces.push((slot * step + 1, base, height, colour(index)));
        }
    }
    let bar = step.saturating_sub(2).max(1);
    html! {
        figure.chart {
            svg role="img" aria-labelledby={ (id) "-title " (id) "-desc" } viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } {
                title id={ (id) "-title" } { (title) }
                desc id={ (id) "-desc" } { (summary) }
                line x1="0" y1=(plot) x2=(WIDTH) y2=(plot) stroke="#4a5361" stroke-width="1" {}
                @for (x, y, height, fill) in pieces {
                    rect x=(x) y=(y) width=(bar) height=(height) fill=(fill) {}
                }
                text x="0" y=(HEIGHT - 4) font-size="12" fill="#4a5361" { "60 min ago" }
                text x=(WIDTH) y=(HEIGHT - 4) font-size="12" fill="#4a5361" text-anchor="end" { "now" }
                text x="0" y="12" font-size="12" fill="#4a5361" { "peak " (peak) " a minute" }
            }
            figcaption {
                strong { (title) } " — " (summary)
                @if series.len() > 1 {
                    ul.legend {
                        @for (index, (name, values)) in series.iter().enumerate() {
                            li {
                                svg.swatch width="10" height="10" viewBox="0 0 10 10" aria-hidden="true" { rect width="10" height="10" fill=(colour(index)) {} }
                                (name) " (" (values.iter().sum::<u64>()) ")"
                            }
                        }
                    }
                }
            }
        }
    }
}
