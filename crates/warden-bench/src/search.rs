//! `warden-bench search-notes`: fills a fresh notes store with synthetic ~1 KB notes and
//! measures `search_notes` as the gateway runs it (JSON arguments in, structured result
//! out, on the read-only connection), printing latency percentiles per query class.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use warden_notes::{NotesServer, ToolOutcome};
use warden_store::postgres::{PgNotes, PgSettings, Postgres};
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

/// What to measure: the store size and queries, and whether PostgreSQL runs too.
pub struct Plan {
    pub notes: usize,
    pub queries: usize,
    pub vocabulary: usize,
    pub seed: u64,
    /// A role that may create databases and roles; the bench makes a fresh database
    /// (and a runtime role, so that row-level security is part of what is measured)
    /// and drops both afterwards.
    pub postgres_url: Option<String>,
}

pub fn run(plan: &Plan) -> Result<(), Failure> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let vocab = Vocabulary::new(plan.vocabulary, &mut rng);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut bytes = 0usize;
    let batch: Vec<(String, String, Vec<String>)> = (0..plan.notes)
        .map(|_| {
            let title = vocab.text(&mut rng, 5);
            let body = vocab.text(&mut rng, WORDS_PER_NOTE);
            bytes += title.len() + body.len();
            (title, body, vec![vocab.sample(&mut rng).to_owned()])
        })
        .collect();
    println!(
        "{} notes, {:.0} bytes each on average",
        plan.notes,
        bytes as f64 / plan.notes as f64
    );

    let tmp = tempfile::tempdir()?;
    let store = Arc::new(NotesStore::open(&DataDir::open(tmp.path())?)?);
    let started = Instant::now();
    for chunk in batch.chunks(10_000) {
        store.create_many(TENANT, chunk.iter().cloned())?;
    }
    println!(
        "\nSQLite (FTS5): loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let sqlite = NotesServer::new(Arc::new(SqliteNotes::new(store)));
    measure(&runtime, &sqlite, &vocab, plan)?;

    if let Some(url) = &plan.postgres_url {
        let database = runtime.block_on(BenchDatabase::create(url))?;
        let outcome = (|| -> Result<(), Failure> {
            let pool = runtime.block_on(database.pool())?;
            let notes = PgNotes::new(pool);
            let started = Instant::now();
            for chunk in batch.chunks(10_000) {
                runtime.block_on(notes.create_many(TENANT, chunk))?;
            }
            runtime.block_on(database.analyze())?;
            println!(
                "\nPostgreSQL (tsvector, GIN): loaded in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            measure(&runtime, &NotesServer::new(Arc::new(notes)), &vocab, plan)
        })();
        runtime.block_on(database.drop())?;
        outcome?;
    }
    Ok(())
}

/// Runs each query class against `server` (the same queries for every backend: the
/// generator starts from the same seed) and prints the percentiles.
fn measure(
    runtime: &tokio::runtime::Runtime,
    server: &NotesServer,
    vocab: &Vocabulary,
    plan: &Plan,
) -> Result<(), Failure> {
    let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x5EA2C4);
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
        let mut latencies = Vec::with_capacity(plan.queries);
        let mut hits = 0usize;
        for _ in 0..plan.queries {
            let query = make_query(&mut rng);
            let started = Instant::now();
            let asker = warden_notes::Asker {
                tenant: TENANT,
                author: "key_bench",
            };
            let answer = runtime.block_on(server.call_tool(
                asker,
                "search_notes",
                json!({ "query": query, "limit": 10 }),
            ))?;
            latencies.push(started.elapsed());
            if let ToolOutcome::Structured(value) = answer.outcome {
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
            hits as f64 / plan.queries as f64
        );
    }
    Ok(())
}

/// A database and a runtime role of the bench's own, on the server `url` names.
struct BenchDatabase {
    admin: tokio_postgres::Config,
    name: String,
    role: String,
}

impl BenchDatabase {
    async fn create(url: &str) -> Result<Self, Failure> {
        let admin: tokio_postgres::Config = url.parse()?;
        let tag = std::process::id();
        let database = Self {
            admin,
            name: format!("warden_bench_{tag}"),
            role: format!("warden_bench_runtime_{tag}"),
        };
        database
            .run(&[
                format!("CREATE ROLE {} LOGIN", database.role),
                format!("CREATE DATABASE {}", database.name),
            ])
            .await?;
        Ok(database)
    }

    fn url(&self, user: &str) -> String {
        let host = match self.admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => "127.0.0.1".into(),
        };
        let port = self.admin.get_ports().first().copied().unwrap_or(5432);
        format!("postgres://{user}@{host}:{port}/{}", self.name)
    }

    /// Migrated as the connecting role, used as the runtime role.
    async fn pool(&self) -> Result<Postgres, Failure> {
        let owner = self.admin.get_user().unwrap_or("postgres").to_owned();
        let timeout = Duration::from_secs(30);
        warden_store::postgres::migrate(&self.url(&owner), Some(&self.role), timeout).await?;
        Ok(Postgres::new(&PgSettings {
            url: self.url(&self.role),
            pool_size: 4,
            statement_timeout: timeout,
            connect_timeout: timeout,
        })?)
    }

    /// The table as it sits a while after a bulk load: vacuumed and analyzed (statistics
    /// for the planner, the visibility map) and checkpointed, so that neither autovacuum
    /// nor the checkpointer's writes of the load run during the measurement.
    async fn analyze(&self) -> Result<(), Failure> {
        let owner = self.admin.get_user().unwrap_or("postgres").to_owned();
        let (client, connection) =
            tokio_postgres::connect(&self.url(&owner), tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute("VACUUM (ANALYZE) warden.notes")
            .await?;
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    async fn drop(&self) -> Result<(), Failure> {
        self.run(&[
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.role),
        ])
        .await
    }

    /// Statements on the server's `postgres` database, one at a time.
    async fn run(&self, statements: &[String]) -> Result<(), Failure> {
        let mut admin = self.admin.clone();
        admin.dbname("postgres");
        let (client, connection) = admin.connect(tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        for statement in statements {
            client.batch_execute(statement).await?;
        }
        drop(client);
        let _ = driver.await;
        Ok(())
    }
}
