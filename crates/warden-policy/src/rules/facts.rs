//! The entities and context of one decision, built directly as Cedar values (no JSON
//! round trip, no schema check per request: the policies were checked against the model
//! once, and what the gateway supplies has the model's shape by construction).

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
use std::str::FromStr as _;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use serde_json::{Map, Value};

use super::model::ArgumentType;
use super::{PrincipalFacts, RequestFacts, Target, ToolFacts};

/// The model's entity types, parsed once.
struct Types {
    key: EntityTypeName,
    client: EntityTypeName,
    group: EntityTypeName,
    tool: EntityTypeName,
    resource: EntityTypeName,
    prompt: EntityTypeName,
    action: EntityTypeName,
}

static TYPES: LazyLock<Types> = LazyLock::new(|| {
    let name = |text: &str| EntityTypeName::from_str(text).expect("a valid type name");
    Types {
        key: name("Key"),
        client: name("Client"),
        group: name("Group"),
        tool: name("Tool"),
        resource: name("Resource"),
        prompt: name("Prompt"),
        action: name("Action"),
    }
});

/// The MCP tool annotations a policy may read (`resource.annotations.openWorldHint`).
const HINTS: [&str; 4] = [
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
];

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

fn string(text: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(text.to_owned())
}

pub(super) fn action_uid(action: &str) -> EntityUid {
    uid(&TYPES.action, action)
}

fn principal_uid(principal: &PrincipalFacts) -> EntityUid {
    let kind = if principal.is_oauth() {
        &TYPES.client
    } else {
        &TYPES.key
    };
    uid(kind, &principal.id)
}

fn principal_entity(principal: &PrincipalFacts) -> Option<Entity> {
    let mut attrs = vec![
        ("tenant".to_owned(), string(&principal.tenant)),
        ("scope".to_owned(), string(&principal.scope)),
    ];
    if !principal.is_oauth() {
        attrs.push(("name".to_owned(), string(&principal.name)));
    }
    let groups = principal.groups.iter().map(|g| uid(&TYPES.group, g));
    let tags = principal
        .tags
        .iter()
        .map(|(name, value)| (name.clone(), string(value)));
    Entity::new_with_tags(principal_uid(principal), attrs, groups, tags).ok()
}

fn tool_entity(tool: &ToolFacts<'_>) -> Option<Entity> {
    let hints = HINTS.iter().filter_map(|hint| {
        let value = tool.annotations?.get(*hint)?.as_bool()?;
        Some(((*hint).to_owned(), RestrictedExpression::new_bool(value)))
    });
    let annotations = RestrictedExpression::new_record(hints).ok()?;
    Entity::new(
        uid(&TYPES.tool, tool.name),
        [
            ("upstream".to_owned(), string(tool.upstream)),
            ("kind".to_owned(), string(tool.kind.as_str())),
            (
                "untrusted".to_owned(),
                RestrictedExpression::new_bool(tool.untrusted),
            ),
            ("annotations".to_owned(), annotations),
        ]
        .into(),
        Default::default(),
    )
    .ok()
}

/// The entity a decision is about.
fn target_entity(target: &Target<'_>) -> Option<Entity> {
    Some(match target {
        Target::Tool(tool) => tool_entity(tool)?,
        Target::Resource { uri, upstream } => Entity::new(
            uid(&TYPES.resource, uri),
            [("upstream".to_owned(), string(upstream))].into(),
            Default::default(),
        )
        .ok()?,
        Target::Prompt { name, upstream } => Entity::new(
            uid(&TYPES.prompt, name),
            [("upstream".to_owned(), string(upstream))].into(),
            Default::default(),
        )
        .ok()?,
    })
}

/// The arguments the tool's Cedar type has room for (a value of another shape is left
/// out: argument validation before this has refused it already).
fn arguments(input_schema: &Value, arguments: &Map<String, Value>) -> Option<RestrictedExpression> {
    let properties = input_schema.get("properties").and_then(Value::as_object);
    let fields = arguments.iter().filter_map(|(name, value)| {
        let kind = ArgumentType::of(properties?.get(name.as_str())?)?;
        kind.fits(value).then(|| (name.clone(), expression(value)))
    });
    RestrictedExpression::new_record(fields).ok()
}

/// A JSON value of a type `ArgumentType` accepts, as Cedar.
fn expression(value: &Value) -> RestrictedExpression {
    match value {
        Value::String(text) => string(text),
        Value::Bool(flag) => RestrictedExpression::new_bool(*flag),
        Value::Array(items) => RestrictedExpression::new_set(items.iter().map(expression)),
        other => RestrictedExpression::new_long(other.as_i64().unwrap_or_default()),
    }
}

/// What a call's context says of its arguments.
enum Arguments {
    Known(RestrictedExpression),
    /// Not known yet: what could the policies decide whatever they are?
    Unknown,
    /// Not a call.
    Absent,
}

/// The context of one request, with only the values `needs` names besides the session's
/// two flags: a policy that reads one left out fails to evaluate (a forbid then refuses)
/// rather than deciding on a value a memoised verdict did not see.
fn context(request: &RequestFacts, arguments: Arguments, needs: Needs) -> Option<Context> {
    let session = &request.session;
    let mut session_fields = vec![
        (
            "untrusted_seen".to_owned(),
            RestrictedExpression::new_bool(session.untrusted_seen),
        ),
        (
            "private_read".to_owned(),
            RestrictedExpression::new_bool(session.private_read),
        ),
    ];
    if needs.calls {
        session_fields.push((
            "calls".to_owned(),
            RestrictedExpression::new_long(i64::try_from(session.calls).unwrap_or(i64::MAX)),
        ));
    }
    if needs.tools_used {
        session_fields.push((
            "tools_used".to_owned(),
            RestrictedExpression::new_set(session.tools_used.iter().map(|t| string(t))),
        ));
    }
    let mut pairs = vec![(
        "session".to_owned(),
        RestrictedExpression::new_record(session_fields).ok()?,
    )];
    if needs.client_name {
        pairs.push(("client_name".to_owned(), string(&request.client_name)));
    }
    if needs.era {
        pairs.push(("era".to_owned(), string(request.era)));
    }
    // Extension values are parsed from text at every request: only for policies that
    // can read them.
    if needs.address {
        pairs.push((
            "address".to_owned(),
            RestrictedExpression::new_ip(request.address.to_string()),
        ));
    }
    if needs.time {
        pairs.push((
            "time".to_owned(),
            RestrictedExpression::new_datetime(super::rfc3339(request.time)),
        ));
    }
    match arguments {
        Arguments::Known(arguments) => pairs.push(("arguments".to_owned(), arguments)),
        Arguments::Unknown => pairs.push((
            "arguments".to_owned(),
            RestrictedExpression::new_unknown("arguments"),
        )),
        Arguments::Absent => {}
    }
    Context::from_pairs(pairs).ok()
}

/// Which context values, besides the session's two flags, the policies can read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Needs {
    pub address: bool,
    pub time: bool,
    /// A call's arguments, converted value by value into a Cedar record: the largest
    /// part of a context, and read only by policies about arguments.
    pub arguments: bool,
    /// The session's tools so far, a set that grows with the session.
    pub tools_used: bool,
    /// The session's call count, which changes with every call.
    pub calls: bool,
    pub client_name: bool,
    pub era: bool,
}

impl Needs {
    /// What either reads.
    pub(super) fn or(self, other: Self) -> Self {
        Self {
            address: self.address || other.address,
            time: self.time || other.time,
            arguments: self.arguments || other.arguments,
            tools_used: self.tools_used || other.tools_used,
            calls: self.calls || other.calls,
            client_name: self.client_name || other.client_name,
            era: self.era || other.era,
        }
    }

    /// What policy texts could read: a conservative test on the words themselves (any
    /// mention, even in a comment, builds the value). A word counts where it stands
    /// alone (`context.era`, `context["era"]`), not inside another (`operator`).
    pub(super) fn of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        texts.into_iter().fold(Self::default(), |needs, text| Self {
            address: needs.address || mentions(text, "address"),
            time: needs.time || mentions(text, "time"),
            arguments: needs.arguments || mentions(text, "arguments"),
            tools_used: needs.tools_used || mentions(text, "tools_used"),
            calls: needs.calls || mentions(text, "calls"),
            client_name: needs.client_name || mentions(text, "client_name"),
            era: needs.era || mentions(text, "era"),
        })
    }

    /// Whether the context holds nothing but the session's two flags: a decision is
    /// then the same for every call with the same principal, target and flags.
    pub(super) fn only_session_flags(self) -> bool {
        !(self.address
            || self.time
            || self.arguments
            || self.tools_used
            || self.calls
            || self.client_name
            || self.era)
    }
}

/// Whether `word` stands in `text` as a whole identifier.
fn mentions(text: &str, word: &str) -> bool {
    let is_identifier = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].ends_with(is_identifier) && !text[at + word.len()..].starts_with(is_identifier)
    })
}

/// Which of the four verdicts a prepared set memoises for these session flags.
pub(super) fn flags_index(request: &RequestFacts) -> usize {
    usize::from(request.session.untrusted_seen) * 2 + usize::from(request.session.private_read)
}

/// The request for `action` on `target`, its context built for `needs`. Building the
/// context is most of a decision's allocations: one request serves every policy set
/// that decides the same call.
pub(super) fn cedar_request(
    principal: &PrincipalFacts,
    action: &str,
    target: &Target<'_>,
    request: &RequestFacts,
    call_arguments: Option<&Map<String, Value>>,
    needs: Needs,
) -> Option<Request> {
    let arguments = match (target, call_arguments) {
        // Policies that never name `arguments` decide the same without them.
        (Target::Tool(_), _) if !needs.arguments => Arguments::Absent,
        (Target::Tool(tool), Some(given)) => Arguments::Known(arguments(tool.input_schema, given)?),
        (Target::Tool(_), None) => Arguments::Unknown,
        _ => Arguments::Absent,
    };
    let context = context(request, arguments, needs)?;
    Request::new(
        principal_uid(principal),
        action_uid(action),
        target_uid(target),
        context,
        None,
    )
    .ok()
}

fn target_uid(target: &Target<'_>) -> EntityUid {
    match target {
        Target::Tool(tool) => uid(&TYPES.tool, tool.name),
        Target::Resource { uri, .. } => uid(&TYPES.resource, uri),
        Target::Prompt { name, .. } => uid(&TYPES.prompt, name),
    }
}

/// The entities of one decision: the principal and its groups, the target, and the
/// action with its parent (`call_tool`).
fn entities(principal: &PrincipalFacts, action: &str, target: &Target<'_>) -> Option<Entities> {
    let target = target_entity(target)?;
    let mut entities = vec![principal_entity(principal)?, target];
    entities.extend(
        principal
            .groups
            .iter()
            .map(|g| Entity::new_no_attrs(uid(&TYPES.group, g), Default::default())),
    );
    let parents = if action.starts_with("call_tool:") {
        let parent = action_uid("call_tool");
        entities.push(Entity::new_no_attrs(parent.clone(), Default::default()));
        [parent].into()
    } else {
        Default::default()
    };
    entities.push(Entity::new_no_attrs(action_uid(action), parents));
    Entities::from_entities(entities, None).ok()
}

/// The entities of one (principal, action, target), and what the policies that read no
/// context decided on them, once asked. For policies that read only the session's two
/// flags, the verdict for each pair of flags, once asked.
#[derive(Debug)]
pub(super) struct Prepared {
    pub entities: Entities,
    pub fixed: OnceLock<super::Fixed>,
    pub by_flags: [OnceLock<super::Verdict>; 4],
}

/// What a set of entities was built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntityKey {
    principal: PrincipalFacts,
    action: String,
    target: TargetKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TargetKey {
    Tool {
        name: String,
        upstream: String,
        kind: &'static str,
        untrusted: bool,
        hints: [Option<bool>; 4],
    },
    Resource {
        uri: String,
        upstream: String,
    },
    Prompt {
        name: String,
        upstream: String,
    },
}

fn hints(tool: &ToolFacts<'_>) -> [Option<bool>; 4] {
    HINTS.map(|hint| tool.annotations.and_then(|a| a.get(hint)?.as_bool()))
}

impl TargetKey {
    fn of(target: &Target<'_>) -> Self {
        match target {
            Target::Tool(tool) => Self::Tool {
                name: tool.name.to_owned(),
                upstream: tool.upstream.to_owned(),
                kind: tool.kind.as_str(),
                untrusted: tool.untrusted,
                hints: hints(tool),
            },
            Target::Resource { uri, upstream } => Self::Resource {
                uri: (*uri).to_owned(),
                upstream: (*upstream).to_owned(),
            },
            Target::Prompt { name, upstream } => Self::Prompt {
                name: (*name).to_owned(),
                upstream: (*upstream).to_owned(),
            },
        }
    }

    fn is(&self, target: &Target<'_>) -> bool {
        match (self, target) {
            (
                Self::Tool {
                    name,
                    upstream,
                    kind,
                    untrusted,
                    hints: known,
                },
                Target::Tool(tool),
            ) => {
                name == tool.name
                    && upstream == tool.upstream
                    && *kind == tool.kind.as_str()
                    && *untrusted == tool.untrusted
                    && *known == hints(tool)
            }
            (
                Self::Resource { uri, upstream },
                Target::Resource {
                    uri: u,
                    upstream: up,
                },
            ) => uri == u && upstream == up,
            (
                Self::Prompt { name, upstream },
                Target::Prompt {
                    name: n,
                    upstream: up,
                },
            ) => name == n && upstream == up,
            _ => false,
        }
    }
}

/// The prepared sets whose keys hash alike.
type Bucket = Vec<(EntityKey, Arc<Prepared>)>;

/// How many entity sets are kept; a full cache starts over.
const CACHED_ENTITY_SETS: usize = 4096;

/// Entity sets by what they were built from: a caller calls the same few tools again
/// and again, and building a set (with its transitive closure), and deciding the
/// policies that read no context, cost more than the rest of a decision.
#[derive(Debug, Default)]
pub(super) struct EntityCache {
    /// Seeded per process, so that no one can choose names whose sets share a bucket.
    hasher: foldhash::fast::RandomState,
    sets: Mutex<HashMap<u64, Bucket, foldhash::fast::RandomState>>,
}

impl EntityCache {
    pub(super) fn prepared(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
    ) -> Option<Arc<Prepared>> {
        let hash = {
            let mut hasher = self.hasher.build_hasher();
            principal.hash(&mut hasher);
            action.hash(&mut hasher);
            match target {
                Target::Tool(tool) => tool.name.hash(&mut hasher),
                Target::Resource { uri, .. } => uri.hash(&mut hasher),
                Target::Prompt { name, .. } => name.hash(&mut hasher),
            }
            hasher.finish()
        };
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, found)) = sets.get(&hash).and_then(|bucket| {
            bucket.iter().find(|(key, _)| {
                key.principal == *principal && key.action == action && key.target.is(target)
            })
        }) {
            return Some(found.clone());
        }
        let built = Arc::new(Prepared {
            entities: entities(principal, action, target)?,
            fixed: OnceLock::new(),
            by_flags: Default::default(),
        });
        if sets.len() >= CACHED_ENTITY_SETS {
            sets.clear();
        }
        sets.entry(hash).or_default().push((
            EntityKey {
                principal: principal.clone(),
                action: action.to_owned(),
                target: TargetKey::of(target),
            },
            built.clone(),
        ));
        Some(built)
    }
}
