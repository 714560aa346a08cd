//! All upstreams as one server: one catalogue, lists that page across upstreams, and
//! routes from a (prefixed) name or a URI back to the upstream that owns it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use warden_config::{ToolClass, ToolRules, glob_matches, rules_for};
use warden_policy::{Catalogue, Origin, ToolKind, legacy_pinned_hash, pinned_form, suspicious};
use warden_store::{Notes, PinState, Pins, Sighting};

use crate::{Caller, ChildHost, Upstream, UpstreamError};
use warden_egress::EgressPolicy;

/// The tenant a shared catalogue is listed for; per-tenant upstreams get a child of their
/// own for it, which no tenant's call ever uses.
const CATALOGUE_TENANT: &str = "";
/// An upstream that pages its tools past this is cut off (and says so in the log).
const MAX_TOOL_PAGES: usize = 100;
const CURSOR_PREFIX: &str = "w1:";
const CHANGES_QUEUE: usize = 64;
/// How long a burst of change notices may take before the catalogue is listed again.
const CHANGE_SETTLE: Duration = Duration::from_millis(50);
/// Before a retry of a catalogue that could not be listed.
const RELIST_DELAY: Duration = Duration::from_secs(2);
/// How often the pins file is checked for approvals made from the command line.
const PIN_POLL: Duration = Duration::from_secs(1);
/// How long a listing of prompts or resources answers "does it exist?".
const OFFERS_TTL: Duration = Duration::from_secs(30);
/// Listings kept at once (upstream × tenant × kind); past it, all are dropped.
const MAX_OFFERS: usize = 4096;

/// A tool withheld from the catalogue until an operator approves it.
#[derive(Debug, Clone)]
pub struct Withheld {
    pub tool: String,
    pub upstream: String,
    pub reason: String,
}

/// What an upstream offers besides tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offered {
    Prompt,
    Resource,
}

impl Offered {
    /// The list method, the result's key, and the field naming each item.
    fn listing(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Prompt => ("prompts/list", "prompts", "name"),
            Self::Resource => ("resources/list", "resources", "uri"),
        }
    }
}

type OffersKey = (usize, String, Offered);

/// One listing of an upstream for one tenant.
struct Offers {
    listed: std::time::Instant,
    names: std::collections::HashSet<String>,
}

/// A `[tools."…"]` entry that matches no tool, and the name that was probably meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmatchedRule {
    pub rule: String,
    pub meant: Option<String>,
}

/// The `[tools."…"]` entries that match no tool. `upstreams` gives each upstream's
/// prefix and, when known, its tools' own names (unknown: a server not started, whose
/// rules cannot be judged). A rule belongs to the upstream whose prefix it starts with
/// (the longest); one that fits no prefix, or names a tool its upstream does not have,
/// is unmatched, with the catalogue name of a tool of the same own name if one exists.
pub fn unmatched_rules<'a>(
    rules: impl IntoIterator<Item = &'a str>,
    upstreams: &[(&str, Option<std::collections::HashSet<String>>)],
) -> Vec<UnmatchedRule> {
    let meant = |own: &str| {
        upstreams.iter().find_map(|(prefix, tools)| {
            tools
                .as_ref()
                .filter(|tools| tools.contains(own))
                .map(|_| format!("{prefix}{own}"))
        })
    };
    rules
        .into_iter()
        .filter_map(|rule| {
            if rule.contains('*') {
                // A pattern is unmatched only when every upstream's tools are known and
                // none fits it.
                let fits = upstreams.iter().any(|(prefix, tools)| {
                    tools.as_ref().is_some_and(|tools| {
                        tools
                            .iter()
                            .any(|own| glob_matches(rule, &format!("{prefix}{own}")))
                    })
                });
                let judged = upstreams.iter().all(|(_, tools)| tools.is_some());
                return (judged && !fits).then(|| UnmatchedRule {
                    rule: rule.to_owned(),
                    meant: None,
                });
            }
            let owner = upstreams
                .iter()
                .filter(|(prefix, _)| rule.starts_with(prefix))
                .max_by_key(|(prefix, _)| prefix.len());
            let own = match owner {
                Some((prefix, Some(tools))) => {
                    let own = &rule[prefix.len()..];
                    if tools.contains(own) {
                        return None;
                    }
                    own
                }
                // Its upstream's tools are not known: nothing to say.
                Some((_, None)) => return None,
                None => rule,
            };
            // The tool's own name, as written or without whatever prefix the rule guessed.
            let guesses = std::iter::once(own).chain(
                own.match_indices(['.', '_', '-'])
                    .map(|(at, _)| &own[at + 1..]),
            );
            Some(UnmatchedRule {
                rule: rule.to_owned(),
                meant: guesses.filter(|g| !g.is_empty()).find_map(meant),
            })
        })
        .collect()
}

/// Where a tool's kind came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindSource {
    /// `[tools."…"] kind`.
    Operator,
    /// The tool's annotations, from a server whose annotations are trusted.
    Annotations,
    /// Nothing: another server's tool counts as `write` until classified.
    Unclassified,
}

impl KindSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "config",
            Self::Annotations => "annotations",
            Self::Unclassified => "unclassified",
        }
    }
}

/// One catalogue tool as `warden tools list` shows it.
#[derive(Debug, Clone)]
pub struct ToolKindInfo {
    pub name: String,
    pub upstream: String,
    pub kind: ToolKind,
    pub source: KindSource,
}

/// Where a resource URI goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriRoute {
    Owner(usize),
    /// No upstream lists it for this tenant or has a template it fits.
    Unknown,
    /// Several upstreams claim it.
    Contested,
}

/// One page of a merged list, and the upstream whose items it holds (each page holds
/// one upstream's).
#[derive(Debug)]
pub struct ListPage {
    pub result: Value,
    pub from: Option<usize>,
}

/// Why a merged list failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("the cursor is not one this server issued")]
    Cursor,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

pub struct Upstreams {
    /// One slot per configured upstream, in order; a reload may put a new upstream in a
    /// slot (its definition changed), never add or remove one.
    slots: Vec<RwLock<Arc<Upstream>>>,
    /// The operator's `[tools."<name>"]` rules, applied whenever the catalogue is built;
    /// a reload replaces them.
    rules: RwLock<Arc<BTreeMap<String, ToolRules>>>,
    pins: Option<Arc<dyn Pins>>,
    /// Set when the pins could not be read for the catalogue (every other server's
    /// tool was withheld): the next look at the pins builds it again.
    pins_unread: AtomicBool,
    /// Held while the catalogue is built, so that builds take turns.
    rebuilding: tokio::sync::Mutex<()>,
    /// What upstreams are started with, kept for a reload's restarts.
    notes: Arc<dyn Notes>,
    egress: Arc<EgressPolicy>,
    host: ChildHost,
    withheld: broadcast::Sender<Withheld>,
    catalogue: RwLock<Arc<Catalogue>>,
    tools: Mutex<Vec<Vec<Value>>>,
    /// Per upstream, the fixed part of each resource template's URI.
    template_prefixes: Mutex<Vec<Vec<String>>>,
    offers: Mutex<HashMap<OffersKey, Offers>>,
    changes: broadcast::Sender<Value>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.all()).finish()
    }
}

impl Upstreams {
    /// Starts every upstream (children spawn in the background); the catalogue fills in
    /// with [`Upstreams::load`].
    /// `pins` keeps the accepted definitions of other servers' tools (the embedded
    /// server's are Warden's own and not pinned).
    pub fn start(
        configs: &[warden_config::Upstream],
        rules: &BTreeMap<String, ToolRules>,
        notes: &Arc<dyn Notes>,
        pins: Option<Arc<dyn Pins>>,
        egress: &Arc<EgressPolicy>,
        host: &ChildHost,
    ) -> Result<Arc<Self>, (String, UpstreamError)> {
        let (shutdown, _) = watch::channel(false);
        let slots = configs
            .iter()
            .map(|config| {
                Upstream::start(config, notes, egress, host)
                    .map(|upstream| RwLock::new(Arc::new(upstream)))
                    .map_err(|error| (config.name.clone(), error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = slots.len();
        Ok(Arc::new(Self {
            slots,
            rules: RwLock::new(Arc::new(rules.clone())),
            pins,
            pins_unread: AtomicBool::new(false),
            rebuilding: tokio::sync::Mutex::new(()),
            notes: notes.clone(),
            egress: egress.clone(),
            host: host.clone(),
            withheld: broadcast::channel(CHANGES_QUEUE).0,
            catalogue: RwLock::new(Arc::new(Catalogue::default())),
            tools: Mutex::new(vec![Vec::new(); count]),
            template_prefixes: Mutex::new(vec![Vec::new(); count]),
            offers: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGES_QUEUE).0,
            shutdown,
        }))
    }

    /// Lists every upstream's catalogue, waiting at most `wait` for slow ones (they join
    /// when ready), and keeps each fresh from then on.
    pub async fn load(self: &Arc<Self>, wait: Duration) {
        let (loaded_tx, mut loaded) = tokio::sync::mpsc::channel(self.slots.len().max(1));
        tokio::spawn(self.clone().watch_pins());
        for index in 0..self.slots.len() {
            let this = self.clone();
            let loaded_tx = loaded_tx.clone();
            tokio::spawn(async move { this.keep_fresh(index, Some(loaded_tx)).await });
        }
        drop(loaded_tx);
        let all = async {
            for _ in 0..self.slots.len() {
                loaded.recv().await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!("some upstreams are not ready yet; their tools appear when they are");
        }
    }

    /// Lists an upstream's catalogue, then again whenever it says its tools changed,
    /// until the upstream stops (shutdown, or a reload that replaced it). `loaded` hears
    /// of the first listing; without it (a restarted upstream), a first listing that
    /// differs is announced like any change.
    async fn keep_fresh(
        self: Arc<Self>,
        index: usize,
        loaded: Option<tokio::sync::mpsc::Sender<()>>,
    ) {
        let upstream = self.at(index);
        let mut notices = upstream.unsolicited();
        let mut stop = upstream.stopping();
        let mut first = loaded;
        loop {
            match self.relist(index).await {
                Ok(changed) => {
                    if let Some(loaded) = first.take() {
                        let _ = loaded.send(()).await;
                    } else if changed {
                        let _ = self.changes.send(
                            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
                        );
                    }
                }
                Err(error) => {
                    tracing::warn!(upstream = upstream.name(), %error, "cannot list the upstream's tools");
                    // The start does not wait for an upstream that cannot answer: its
                    // tools join the catalogue when it does.
                    if let Some(loaded) = first.take() {
                        let _ = loaded.send(()).await;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RELIST_DELAY) => continue,
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
            // Wait for a reason to list again: a change notice, or the refresh interval
            // (for servers that change their tools without saying so).
            let refresh = async {
                match upstream.refresh() {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(refresh);
            loop {
                let notice = tokio::select! {
                    notice = notices.recv() => notice,
                    () = &mut refresh => break,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match notice {
                    Ok(message) => {
                        let method = message
                            .get("method")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if matches!(
                            method,
                            "notifications/prompts/list_changed"
                                | "notifications/resources/list_changed"
                        ) {
                            self.forget_offers(index);
                        }
                        if method == "notifications/tools/list_changed" {
                            // Servers announce changes in bursts: one listing answers them all.
                            tokio::time::sleep(CHANGE_SETTLE).await;
                            while let Ok(other) = notices.try_recv() {
                                if other["method"] != "notifications/tools/list_changed" {
                                    let _ = self.changes.send(other);
                                }
                            }
                            break;
                        }
                        let _ = self.changes.send(message);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// Lists one upstream's tools (and resource templates) again; says whether its tools
    /// changed.
    async fn relist(&self, index: usize) -> Result<bool, UpstreamError> {
        let upstream = self.at(index);
        let tools = self.list_all(index, "tools/list", "tools").await?;
        let supports_resources = upstream
            .facts()
            .is_some_and(|facts| facts.offers("resources"));
        let prefixes = if supports_resources {
            self.list_all(index, "resources/templates/list", "resourceTemplates")
                .await
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.get("uriTemplate").and_then(Value::as_str))
                .map(|t| t.split('{').next().unwrap_or_default().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        self.template_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[index] = prefixes;
        let changed = {
            let mut known = self.tools.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = known[index] != tools;
            known[index] = tools;
            changed
        };
        if changed {
            self.rebuild().await;
        }
        Ok(changed)
    }

    /// Every page of one list from one upstream, as the catalogue sees it.
    async fn list_all(
        &self,
        index: usize,
        method: &str,
        key: &str,
    ) -> Result<Vec<Value>, UpstreamError> {
        let caller = Caller {
            tenant: CATALOGUE_TENANT,
            author: CATALOGUE_TENANT,
        };
        self.list_all_as(index, caller, method, key).await
    }

    /// Every page of one list from one upstream, as `caller` sees it.
    async fn list_all_as(
        &self,
        index: usize,
        caller: Caller<'_>,
        method: &str,
        key: &str,
    ) -> Result<Vec<Value>, UpstreamError> {
        let upstream = self.at(index);
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let mut params = Map::new();
            if let Some(cursor) = cursor.take() {
                params.insert("cursor".into(), cursor);
            }
            let answer = upstream.request(caller, method, params, None).await?;
            let result = answer.get("result").ok_or(UpstreamError::Protocol)?;
            if let Some(page) = result.get(key).and_then(Value::as_array) {
                items.extend(page.iter().cloned());
            }
            match result.get("nextCursor") {
                Some(next @ Value::String(_)) => cursor = Some(next.clone()),
                _ => return Ok(items),
            }
        }
        tracing::warn!(
            upstream = upstream.name(),
            method,
            "too many pages; the rest is left out"
        );
        Ok(items)
    }

    /// Merges the lists into one catalogue, names prefixed.
    async fn rebuild(&self) {
        // Builds take turns from reading the lists to writing the catalogue: two at
        // once (two upstreams listed together) must not let the one that read the
        // older lists write last.
        let _turn = self.rebuilding.lock().await;
        let tools = self
            .tools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut candidates = Vec::new();
        for (index, list) in tools.iter().enumerate() {
            let upstream = self.at(index);
            let prefix = upstream.prefix();
            for definition in list {
                let Some(name) = definition.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let origin = Origin {
                    upstream: index,
                    name: name.to_owned(),
                };
                let mut definition = definition.clone();
                definition["name"] = Value::String(catalogue_name(prefix, name));
                candidates.push((definition, origin));
            }
        }
        let candidates = self.pinned(candidates).await;
        let (catalogue, _withheld) = Catalogue::build(
            candidates,
            |definition, origin| self.rules_of(definition, origin),
            |definition, origin| self.classify(definition, origin).0,
        );
        *self
            .catalogue
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(catalogue);
    }

    /// A tool's kind, and where it came from: the operator's `[tools."…"]` kind; the
    /// annotations of a server whose annotations are trusted; otherwise `write` (other
    /// servers' annotations are hints, not facts: fail closed).
    fn classify(&self, definition: &Value, origin: &Origin) -> (ToolKind, KindSource) {
        let name = definition
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match rules_for(&self.rules(), name).and_then(|rules| rules.kind) {
            Some(ToolClass::Read) => (ToolKind::Read, KindSource::Operator),
            Some(ToolClass::Write) => (ToolKind::Write, KindSource::Operator),
            Some(ToolClass::Destructive) => (ToolKind::Destructive, KindSource::Operator),
            None if self.at(origin.upstream).trusts_annotations() => (
                ToolKind::from_trusted_annotations(definition),
                KindSource::Annotations,
            ),
            None => (ToolKind::Write, KindSource::Unclassified),
        }
    }

    /// The operator's rules for a tool: its own entry, else the most specific pattern;
    /// and when neither confines paths, its upstream's `paths_root` over every argument
    /// the schema marks as a path or names like one.
    fn rules_of(&self, definition: &Value, origin: &Origin) -> ToolRules {
        let name = definition
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut rules = rules_for(&self.rules(), name).cloned().unwrap_or_default();
        if rules.root.is_none()
            && let Some(root) = self.at(origin.upstream).paths_root()
        {
            rules.root = Some(root.to_path_buf());
            if let Some(schema) = definition.get("inputSchema") {
                rules
                    .paths
                    .extend(warden_policy::path_named_arguments(schema));
            }
        }
        // The embedded server's tools say what their results carry; an operator's
        // `returns` can only add to it.
        if matches!(
            self.at(origin.upstream).config().source,
            warden_config::Source::Builtin(_)
        ) {
            let own = origin.name.as_str();
            rules.returns.untrusted |= warden_notes::UNTRUSTED_RESULTS.contains(&own);
            rules.returns.private |= warden_notes::PRIVATE_RESULTS.contains(&own);
        }
        rules
    }

    /// Every tool of the catalogue with its upstream, kind and where the kind came from.
    pub fn tool_kinds(&self) -> Vec<ToolKindInfo> {
        self.catalogue()
            .visible(ToolKind::Destructive)
            .map(|tool| {
                let (kind, source) = self.classify(tool.definition(), tool.origin());
                ToolKindInfo {
                    name: tool.name().to_owned(),
                    upstream: self.at(tool.origin().upstream).name().to_owned(),
                    kind,
                    source,
                }
            })
            .collect()
    }

    /// The candidates whose definitions are accepted: pinned on first sight unless they
    /// look like they address the model; withheld when they changed since, until
    /// `warden tools approve`.
    async fn pinned(&self, candidates: Vec<(Value, Origin)>) -> Vec<(Value, Origin)> {
        let Some(pins) = &self.pins else {
            return candidates;
        };
        let name_of = |definition: &Value| {
            definition
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let names: Vec<(usize, String)> = candidates
            .iter()
            .map(|(definition, origin)| (origin.upstream, name_of(definition)))
            .collect();
        // The embedded server's tools are Warden's own: never pinned.
        let sightings: Vec<Sighting> = candidates
            .iter()
            .filter(|(_, origin)| !self.at(origin.upstream).is_embedded())
            .map(|(definition, origin)| {
                let others: Vec<&str> = names
                    .iter()
                    .filter(|(upstream, _)| *upstream != origin.upstream)
                    .map(|(_, name)| name.as_str())
                    .collect();
                let (form, hash) = pinned_form(definition);
                Sighting {
                    tool: name_of(definition),
                    hash,
                    definition: form,
                    suspicion: suspicious(definition, &others).map(str::to_owned),
                    legacy_hash: legacy_pinned_hash(definition),
                }
            })
            .collect();
        let states = match pins.check_all(&sightings).await {
            Ok(states) => {
                self.pins_unread.store(false, Ordering::Relaxed);
                states
            }
            Err(error) => {
                // Fail closed: what cannot be checked is not offered, until the pins
                // can be read again.
                tracing::error!(%error, tools = sightings.len(), "tool pins not checked; the tools of other servers are withheld");
                self.pins_unread.store(true, Ordering::Relaxed);
                Vec::new()
            }
        };
        let mut states = states.into_iter().zip(sightings);
        let mut accepted = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            let upstream = self.at(candidate.1.upstream);
            if upstream.is_embedded() {
                accepted.push(candidate);
                continue;
            }
            match states.next() {
                Some((PinState::Accepted, _)) => accepted.push(candidate),
                // Said once, when first withheld.
                Some((PinState::Withheld { reason, new: true }, sighting)) => {
                    let name = sighting.tool;
                    tracing::warn!(tool = %name, %reason, "tool withheld until approved (warden tools diff {name})");
                    let _ = self.withheld.send(Withheld {
                        tool: name,
                        upstream: upstream.name().to_owned(),
                        reason,
                    });
                }
                Some((PinState::Withheld { new: false, .. }, _)) | None => {}
            }
        }
        accepted
    }

    /// Rebuilds the catalogue whenever an approval changes the pins (from the CLI, in
    /// another process), until shutdown.
    async fn watch_pins(self: Arc<Self>) {
        let Some(pins) = self.pins.clone() else {
            return;
        };
        let mut stop = self.shutdown.subscribe();
        let mut seen = pins.version().await.ok();
        loop {
            tokio::select! {
                () = tokio::time::sleep(PIN_POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = pins.version().await.ok();
            let unread = now.is_some() && self.pins_unread.load(Ordering::Relaxed);
            if now != seen || unread {
                seen = now;
                self.rebuild().await;
                let _ = self
                    .changes
                    .send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
            }
        }
    }

    /// The operator's `[tools."…"]` entries that match no tool the upstreams listed
    /// (upstreams not listed yet are not judged).
    pub fn unmatched_rules(&self) -> Vec<UnmatchedRule> {
        let tools = self.tools.lock().unwrap_or_else(PoisonError::into_inner);
        let upstreams = self.all();
        let known: Vec<(&str, Option<std::collections::HashSet<String>>)> = upstreams
            .iter()
            .zip(tools.iter())
            .map(|(upstream, listed)| {
                let names = upstream.facts().map(|_| {
                    listed
                        .iter()
                        .filter_map(|t| t.get("name").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                });
                (upstream.prefix(), names)
            })
            .collect();
        unmatched_rules(self.rules().keys().map(String::as_str), &known)
    }

    /// Tools newly withheld by their pins, as they happen (for the audit trail).
    pub fn withheld(&self) -> broadcast::Receiver<Withheld> {
        self.withheld.subscribe()
    }

    pub fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn get(&self, index: usize) -> Option<Arc<Upstream>> {
        self.slots
            .get(index)
            .map(|slot| slot.read().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// The upstream in slot `index` (an index from this catalogue or its routes).
    fn at(&self, index: usize) -> Arc<Upstream> {
        self.slots[index]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every upstream, in the configured order.
    pub fn all(&self) -> Vec<Arc<Upstream>> {
        (0..self.slots.len()).map(|index| self.at(index)).collect()
    }

    /// The operator's tool rules in force.
    fn rules(&self) -> Arc<BTreeMap<String, ToolRules>> {
        self.rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the operator's tool rules (a reload): the catalogue is built again
    /// with them, and clients with a stream hear that the tools changed.
    pub async fn set_rules(&self, rules: &BTreeMap<String, ToolRules>) {
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules.clone());
        self.rebuild().await;
        let _ = self
            .changes
            .send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
    }

    /// Starts a new upstream from `config` in slot `index` and stops the one it
    /// replaces (a reload, when its definition changed). Calls in flight to the old one
    /// fail as unavailable; new calls wait for the new one. Its tools are listed again,
    /// and a change is announced to clients.
    pub async fn restart(
        self: &Arc<Self>,
        index: usize,
        config: &warden_config::Upstream,
    ) -> Result<(), UpstreamError> {
        let fresh = Arc::new(Upstream::start(
            config,
            &self.notes,
            &self.egress,
            &self.host,
        )?);
        let old = std::mem::replace(
            &mut *self.slots[index]
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        self.forget_offers(index);
        if *self.shutdown.borrow() {
            // Shut down meanwhile: the new one goes too.
            self.at(index).stop().await;
        } else {
            let this = self.clone();
            tokio::spawn(async move { this.keep_fresh(index, None).await });
        }
        old.stop().await;
        Ok(())
    }

    /// Notifications for clients: list changes, resource updates.
    pub fn changes(&self) -> broadcast::Receiver<Value> {
        self.changes.subscribe()
    }

    /// Stops every child: stdin closed, a grace period, then a kill.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for upstream in self.all() {
            upstream.stop().await;
        }
    }

    /// The upstream a prefixed name belongs to, and the name it knows. The longest
    /// matching prefix wins, so `a.` and `a.b.` can live side by side.
    pub fn route_name(&self, name: &str) -> Option<(usize, String)> {
        self.all()
            .into_iter()
            .enumerate()
            .filter(|(_, u)| name.starts_with(u.prefix()))
            .max_by_key(|(_, u)| u.prefix().len())
            .map(|(index, u)| (index, name[u.prefix().len()..].to_owned()))
            .filter(|(_, rest)| !rest.is_empty())
    }

    /// Whether upstream `index` offers this prompt or resource to `caller`: it listed
    /// it (for that tenant) within the last half minute, or does so now. A name an
    /// upstream never offered is refused without reaching it.
    pub async fn offers(
        &self,
        index: usize,
        caller: Caller<'_>,
        kind: Offered,
        name: &str,
    ) -> Result<bool, UpstreamError> {
        let key = (index, caller.tenant.to_owned(), kind);
        {
            let offers = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(listing) = offers.get(&key).filter(|l| l.listed.elapsed() < OFFERS_TTL) {
                return Ok(listing.names.contains(name));
            }
        }
        let (method, list_key, field) = kind.listing();
        let capability = list_key;
        let offered = self
            .at(index)
            .facts()
            .is_some_and(|facts| facts.offers(capability));
        let names = if offered {
            self.list_all_as(index, caller, method, list_key)
                .await?
                .iter()
                .filter_map(|item| item.get(field).and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        } else {
            std::collections::HashSet::new()
        };
        let found = names.contains(name);
        let mut offers = self.offers.lock().unwrap_or_else(PoisonError::into_inner);
        if offers.len() >= MAX_OFFERS {
            offers.clear();
        }
        offers.insert(
            key,
            Offers {
                listed: std::time::Instant::now(),
                names,
            },
        );
        Ok(found)
    }

    /// Whether `uri` fits one of upstream `index`'s resource templates.
    fn fits_template(&self, index: usize, uri: &str) -> bool {
        self.template_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .is_some_and(|prefixes| prefixes.iter().any(|p| uri.starts_with(p.as_str())))
    }

    fn forget_offers(&self, index: usize) {
        self.offers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(of, _, _), _| *of != index);
    }

    /// The upstream a resource URI belongs to, for `caller`: the one upstream that
    /// claims it, by listing it for that tenant or by a template it fits. A URI no one
    /// claims is unknown; one claimed by several upstreams is refused (and logged): one
    /// server must not be able to answer for another's resources.
    pub async fn route_uri(
        &self,
        caller: Caller<'_>,
        uri: &str,
    ) -> Result<UriRoute, UpstreamError> {
        let mut claimants = Vec::new();
        for index in 0..self.slots.len() {
            if self.fits_template(index, uri)
                || self.offers(index, caller, Offered::Resource, uri).await?
            {
                claimants.push(index);
            }
        }
        Ok(match claimants.as_slice() {
            [] => UriRoute::Unknown,
            [owner] => UriRoute::Owner(*owner),
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|i| self.at(*i).name().to_owned())
                    .collect();
                tracing::warn!(
                    upstreams = ?names,
                    tenant = caller.tenant,
                    "a resource URI is claimed by several upstreams; reads of it are refused"
                );
                UriRoute::Contested
            }
        })
    }

    /// One page of `prompts/list`, `resources/list` or `resources/templates/list` across
    /// all upstreams. The cursor says which upstream is next and carries its own cursor.
    pub async fn list(
        &self,
        caller: Caller<'_>,
        method: &str,
        cursor: Option<&str>,
    ) -> Result<ListPage, ListError> {
        let (key, capability) = match method {
            "prompts/list" => ("prompts", "prompts"),
            "resources/list" => ("resources", "resources"),
            _ => ("resourceTemplates", "resources"),
        };
        let (mut index, mut inner) = match cursor {
            Some(cursor) => self.decode_cursor(cursor)?,
            None => (0, None),
        };
        while index < self.slots.len() {
            let upstream = self.at(index);
            let offers = upstream
                .facts()
                .is_none_or(|facts| facts.offers(capability));
            let page = if offers {
                self.page(index, caller, method, key, inner.take()).await
            } else {
                Ok((Vec::new(), None))
            };
            let (items, next) = match page {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(upstream = upstream.name(), %error, method, "upstream left out of the list");
                    (Vec::new(), None)
                }
            };
            let following = match next {
                Some(next) => Some((index, Some(next))),
                None if index + 1 < self.slots.len() => Some((index + 1, None)),
                None => None,
            };
            if items.is_empty()
                && let Some(following) = following
            {
                // Nothing here: go on to the next page rather than hand back an empty one.
                (index, inner) = following;
                continue;
            }
            let mut result = Map::new();
            result.insert(key.into(), Value::Array(items));
            if let Some((index, inner)) = following {
                result.insert(
                    "nextCursor".into(),
                    encode_cursor(index, inner.as_deref()).into(),
                );
            }
            return Ok(ListPage {
                result: Value::Object(result),
                from: Some(index),
            });
        }
        Ok(ListPage {
            result: json!({ key: [] }),
            from: None,
        })
    }

    async fn page(
        &self,
        index: usize,
        caller: Caller<'_>,
        method: &str,
        key: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<Value>, Option<String>), UpstreamError> {
        let upstream = self.at(index);
        let mut params = Map::new();
        if let Some(cursor) = cursor {
            params.insert("cursor".into(), cursor.into());
        }
        let answer = upstream.request(caller, method, params, None).await?;
        let Some(result) = answer.get("result") else {
            // An upstream without this list answers an error: it simply has none.
            return Ok((Vec::new(), None));
        };
        let mut items: Vec<Value> = result
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if key == "prompts" {
            for prompt in &mut items {
                if let Some(name) = prompt.get("name").and_then(Value::as_str) {
                    prompt["name"] = Value::String(format!("{}{name}", upstream.prefix()));
                }
            }
        }
        let next = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((items, next))
    }

    fn decode_cursor(&self, cursor: &str) -> Result<(usize, Option<String>), ListError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| ListError::Cursor)?;
        let text = String::from_utf8(bytes).map_err(|_| ListError::Cursor)?;
        let rest = text.strip_prefix(CURSOR_PREFIX).ok_or(ListError::Cursor)?;
        let (index, inner) = rest.split_once(':').unwrap_or((rest, ""));
        let index: usize = index.parse().map_err(|_| ListError::Cursor)?;
        if index >= self.slots.len() {
            return Err(ListError::Cursor);
        }
        Ok((index, (!inner.is_empty()).then(|| inner.to_owned())))
    }

    /// What Warden offers its clients: the union of what the upstreams offer, with list
    /// changes always announced (Warden relays them).
    pub fn capabilities(&self) -> Value {
        let mut offered = Map::new();
        offered.insert("tools".into(), json!({ "listChanged": true }));
        let facts: Vec<_> = self.all().iter().filter_map(|u| u.facts()).collect();
        let any = |capability| facts.iter().any(|f| f.offers(capability));
        if any("resources") {
            let subscribe = facts
                .iter()
                .any(|f| f.capabilities["resources"]["subscribe"] == true);
            offered.insert(
                "resources".into(),
                json!({ "listChanged": true, "subscribe": subscribe }),
            );
        }
        if any("prompts") {
            offered.insert("prompts".into(), json!({ "listChanged": true }));
        }
        if any("completions") {
            offered.insert("completions".into(), json!({}));
        }
        if any("logging") {
            offered.insert("logging".into(), json!({}));
        }
        Value::Object(offered)
    }

    /// The upstreams' instructions, each passed through `harden` with its upstream, and
    /// each named when there are several.
    pub fn instructions(&self, harden: impl Fn(&Upstream, &mut String)) -> Option<String> {
        let parts: Vec<String> = self
            .all()
            .iter()
            .filter_map(|u| {
                let mut text = u.facts()?.instructions.clone()?;
                harden(u, &mut text);
                Some(if self.slots.len() == 1 {
                    text
                } else {
                    format!("[{}] (tools prefixed {:?}): {text}", u.name(), u.prefix())
                })
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

/// The longest tool name function-calling APIs take.
const MAX_TOOL_NAME: usize = 64;

/// A tool's name in the merged catalogue: the upstream's prefix and the tool's own name,
/// with any character function-calling APIs refuse (`[A-Za-z0-9_-]` only) written as `_`,
/// and a name past 64 characters cut, with 8 hex digits of its full name's SHA-256 so
/// that it stays the same from start to start and unlike its neighbours.
fn catalogue_name(prefix: &str, own: &str) -> String {
    let safe: String = own
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{prefix}{safe}");
    if name.len() <= MAX_TOOL_NAME {
        return name;
    }
    let digest = warden_policy::hash_of_form(&format!("{prefix}{own}"));
    let tag = &digest[..8];
    let mut cut = MAX_TOOL_NAME - tag.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{tag}", &name[..cut])
}

fn encode_cursor(index: usize, inner: Option<&str>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{CURSOR_PREFIX}{index}:{}",
        inner.unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(names: &[&str]) -> Option<std::collections::HashSet<String>> {
        Some(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn catalogue_names_fit_every_function_calling_api() {
        assert_eq!(catalogue_name("fs__", "read_file"), "fs__read_file");
        assert_eq!(catalogue_name("fs__", "get.user info"), "fs__get_user_info");
        let long = "a".repeat(80);
        let cut = catalogue_name("fs__", &long);
        assert_eq!(cut.len(), 64);
        assert!(cut.starts_with("fs__aaaa"));
        assert_eq!(cut, catalogue_name("fs__", &long), "stable");
        assert_ne!(cut, catalogue_name("fs__", &format!("{long}b")), "distinct");
        assert!(
            cut.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }

    #[test]
    fn rules_by_the_wrong_name_are_found_with_the_right_one() {
        let upstreams = [
            ("notes.", known(&["delete_note", "get_note"])),
            ("fs.", None),
            ("gh_", known(&["create_issue"])),
        ];
        let rules = [
            "notes.delete_note",
            "notes.*_note",
            "fs.*",
            "delete_note",
            "notes.remove_note",
            "fs.write_file",
            "github.create_issue",
            "gh_nothing",
        ];
        let found = unmatched_rules(rules, &upstreams);
        let found: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|u| (u.rule.as_str(), u.meant.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                ("delete_note", Some("notes.delete_note")),
                ("notes.remove_note", None),
                ("github.create_issue", Some("gh_create_issue")),
                ("gh_nothing", None),
            ]
        );
    }
}
