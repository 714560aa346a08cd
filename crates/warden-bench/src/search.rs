//! `warden-bench search-notes`: fills a fresh notes store with synthetic ~1 KB notes and
//! measures `search_notes` as the gateway runs it (JSON arguments in, structured result
//! out, on the read-only connection), printing latency percentiles per query class.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use warden_notes::{NotesServer, ToolOutcome};
use warden_store::{DataDir, NotesStore, SqliteNotes};

use crate::{Failure, micros, percentile};

const TENANT: &str = "bench";

/// Draws one query of a class.
type QueryMaker<'a> = Box<dyn Fn(&mut StdRng) -> String + 'a>;
const WORDS_PER_NOTE: usize = 150;

/// A synthetic vocabulary whose word frequencies follow Zipf's law, like real text.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    fn new(size: usize, rng: &mut StdRng) -> Self {
        const SYLLABLES: [&str; 24] = [
            "ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "po", "an", "el", "or", "us",
            "ith", "ber", "gal", "mon", "tri", "zen", "qua", "fy", "dro", "lek",
        ];
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(size);
        while words.len() < size {
            let syllables = rng.random_range(2..=4);
            let word: String = (0..syllables)
                .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
                .collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let target = rng.random::<f64>() * total;
        let index = self
            .cumulative
            .partition_point(|&c| c < target)
            .min(self.words.len() - 1);
        &self.words[index]
    }

    fn text(&self, rng: &mut StdRng, words: usize) -> String {
        (0..words)
            .map(|_| self.sample(rng))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub fn run(notes: usize, queries: usize, vocabulary: usize, seed: u64) -> Result<(), Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let vocab = Vocabulary::new(vocabulary, &mut rng);
    let tmp = tempfile::tempdir()?;
    let store = Arc::new(NotesStore::open(&DataDir::open(tmp.path())?)?);

    let started = Instant::now();
    let mut bytes = 0usize;
    let batch: Vec<(String, String, Vec<String>)> = (0..notes)
        .map(|_| {
            let title = vocab.text(&mut rng, 5);
            let body = vocab.text(&mut rng, WORDS_PER_NOTE);
            bytes += title.len() + body.len();
            (title, body, vec![vocab.sample(&mut rng).to_owned()])
        })
        .collect();
    for chunk in batch.chunks(10_000) {
        store.create_many(TENANT, chunk.iter().cloned())?;
    }
    println!(
        "loaded {notes} notes, {:.0} bytes each on average, in {:.1} s",
        bytes as f64 / notes as f64,
        started.elapsed().as_secs_f64()
    );

    let server = NotesServer::new(Arc::new(SqliteNotes::new(store)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Typical: one or two words drawn like the text itself. Rare: words from the long
    // tail. Common: the ten most frequent words, which match most notes (worst case).
    let classes: [(&str, QueryMaker<'_>); 3] = [
        (
            "typical (1-2 words, text distribution)",
            Box::new(|rng: &mut StdRng| {
                let n = rng.random_range(1..=2);
                (0..n)
                    .map(|_| vocab.sample(rng).to_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        ),
        (
            "rare (1 word from the long tail)",
            Box::new(|rng: &mut StdRng| {
                vocab.words[rng.random_range(vocab.words.len() / 10..vocab.words.len())].clone()
            }),
        ),
        (
            "common (1 of the 10 most frequent words)",
            Box::new(|rng: &mut StdRng| vocab.words[rng.random_range(0..10)].clone()),
        ),
    ];
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "query class", "p50", "p90", "p99", "max", "hits/q"
    );
    for (name, make_query) in classes {
        let mut latencies = Vec::with_capacity(queries);
        let mut hits = 0usize;
        for _ in 0..queries {
            let query = make_query(&mut rng);
            let started = Instant::now();
            let outcome = runtime.block_on(server.call_tool(
                TENANT,
                "search_notes",
                json!({ "query": query, "limit": 10 }),
            ))?;
            latencies.push(started.elapsed());
            if let ToolOutcome::Structured(value) = outcome {
                hits += value["results"].as_array().map_or(0, Vec::len);
            }
        }
        latencies.sort();
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9} {:>8.1}",
            name,
            micros(percentile(&latencies, 0.50)),
            micros(percentile(&latencies, 0.90)),
            micros(percentile(&latencies, 0.99)),
            micros(*latencies.last().unwrap_or(&Duration::ZERO)),
            hits as f64 / queries as f64
        );
    }
    Ok(())
}
