//! Policies as code (Cedar): who may call what, with which arguments, and what needs a
//! person. The model (`rules/schema.cedarschema`) types principals (`Key`, `Client`,
//! `Group`), tools and the request's context; each tool gets an action of its own,
//! `call_tool:<name>` under `call_tool`, whose context types the tool's arguments as its
//! input schema says, so that `context.arguments.path like "/srv/data/*"` is checked
//! against the real type. Without policy files, the built-in policies
//! (`rules/builtin.cedar`) say what Warden has always done: read keys see read tools,
//! write and admin keys every tool.
//!
//! Policies are compiled once, and sliced by action once: a decision evaluates only the
//! policies whose action scope can match it, over entities built for that request alone
//! (the principal and its groups, the tool, the action). A decision names the policies
//! that made it (their `@id`); permits carry effects as annotations:
//! `@confirm("elicit" | "approve")`, `@cost("5")`. Forbid wins; with policies loaded,
//! what no permit allows is refused; a forbid that fails to evaluate refuses (fail
//! closed), a permit that fails does not apply.

mod facts;
mod model;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr as _;

use cedar_policy::{
    ActionConstraint, Authorizer, Decision, Effect, Policy, PolicyId, PolicySet, ValidationMode,
    Validator,
};
use serde_json::{Map, Value};
use warden_config::Confirm;

pub use model::{SCHEMA, call_action, schema_for, schema_text};

use crate::ToolKind;

/// What applies without policy files.
pub const BUILTIN: &str = include_str!("rules/builtin.cedar");
/// The shipped session policy: a person confirms writes once untrusted text was read.
const AFTER_UNTRUSTED: &str = include_str!("rules/after_untrusted.cedar");
/// The shipped tightening: nothing goes out once untrusted text and private data met.
pub const NO_OUTBOUND: &str = include_str!("rules/no_outbound.cedar");
/// The name the built-in policies are reported under.
const BUILTIN_FILE: &str = "builtin";

/// The shipped session policy, asking a person in the way `confirm` says.
pub fn after_untrusted(confirm: Confirm) -> String {
    let how = match confirm {
        Confirm::Approve => "approve",
        _ => "elicit",
    };
    AFTER_UNTRUSTED.replace("@confirm(\"elicit\")", &format!("@confirm(\"{how}\")"))
}

/// A tool as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct ToolFacts<'a> {
    pub name: &'a str,
    pub upstream: &'a str,
    pub kind: ToolKind,
    /// Its results are untrusted text (another user's note, a web page).
    pub untrusted: bool,
    /// Its `inputSchema`.
    pub input_schema: &'a Value,
    /// Its MCP `annotations`, as the upstream declared them.
    pub annotations: Option<&'a Value>,
}

/// What a decision is about.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Tool(ToolFacts<'a>),
    Resource { uri: &'a str, upstream: &'a str },
    Prompt { name: &'a str, upstream: &'a str },
}

/// Who asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PrincipalFacts {
    /// `key_…`, or `oauth:<subject>` for an OAuth client.
    pub id: String,
    pub tenant: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// A key's name (empty for OAuth clients).
    pub name: String,
    /// A key's labels, or an OAuth client's claims (as text).
    pub tags: BTreeMap<String, String>,
    /// OAuth groups.
    pub groups: Vec<String>,
}

impl PrincipalFacts {
    fn is_oauth(&self) -> bool {
        self.id.starts_with("oauth:")
    }
}

/// What a session (or modern client instance) has met so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFacts {
    pub untrusted_seen: bool,
    pub private_read: bool,
    pub calls: u64,
    pub tools_used: Vec<String>,
}

/// The request around a decision.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub client_name: String,
    /// `legacy` or `modern`.
    pub era: &'static str,
    pub address: std::net::IpAddr,
    /// Unix seconds.
    pub time: i64,
    pub session: SessionFacts,
}

/// What the policies decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The `@id` of each policy that decided (the permits that allowed, or the forbids
    /// that refused; none when nothing permitted).
    pub policies: Vec<String>,
    /// `@confirm` of a deciding permit (`Elicit` or `Approve`; the stronger wins).
    pub confirm: Option<Confirm>,
    /// `@cost` of the deciding permits, added up.
    pub cost: u64,
}

impl Verdict {
    fn refused(policies: Vec<String>) -> Self {
        Self {
            allowed: false,
            policies,
            confirm: None,
            cost: 0,
        }
    }
}

/// A problem in a policy file: where, and Cedar's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Line and column (from 1) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |at| before.len() - at - 1)
        + 1;
    (line, column)
}

/// A problem at byte `offset` of `file` (holding `text`).
fn problem_at(file: &str, text: &str, offset: usize, message: String) -> PolicyProblem {
    let (line, column) = position(text, offset);
    PolicyProblem {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// A problem in `file` (holding `text`), at the first place a diagnostic points to.
fn problem(
    file: &str,
    text: &str,
    diagnostic: &dyn miette::Diagnostic,
    message: String,
) -> PolicyProblem {
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map_or(0, |label| label.offset());
    problem_at(file, text, offset, message)
}

/// Where `policy` starts in `text`, as near as its annotations tell (Cedar does not
/// say): its `@id`, else its first effect annotation, else the file's start.
fn locate(text: &str, policy: &Policy) -> usize {
    ["id", "confirm", "cost"]
        .iter()
        .find_map(|key| {
            let value = policy.annotation(key)?;
            let written = format!("@{key}({})", model::quoted(value));
            text.find(&written)
        })
        .unwrap_or(0)
}

/// What Warden knows of one policy.
#[derive(Debug, Clone)]
struct Meta {
    /// Its `@id`, or its file and number when it has none.
    name: String,
    /// The file it came from (index into `files`).
    file: usize,
    confirm: Option<Confirm>,
    cost: u64,
}

/// The effects a permit's annotations ask for, or what is wrong with them.
fn effects(policy: &Policy) -> Result<(Option<Confirm>, u64), String> {
    let forbid = policy.effect() == Effect::Forbid;
    let confirm = match policy.annotation("confirm") {
        None => None,
        Some(_) if forbid => return Err("@confirm applies to permits only".into()),
        Some("elicit") => Some(Confirm::Elicit),
        Some("approve") => Some(Confirm::Approve),
        Some(other) => {
            return Err(format!(
                "@confirm must be \"elicit\" or \"approve\", not {other:?}"
            ));
        }
    };
    let cost = match policy.annotation("cost") {
        None => 0,
        Some(_) if forbid => return Err("@cost applies to permits only".into()),
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| format!("@cost must be a whole number, not {text:?}"))?,
    };
    Ok((confirm, cost))
}

/// The action ids a constraint names.
fn named_actions(constraint: &ActionConstraint) -> Vec<String> {
    match constraint {
        ActionConstraint::Any => Vec::new(),
        ActionConstraint::Eq(uid) => vec![uid.id().unescaped().to_owned()],
        ActionConstraint::In(uids) => uids.iter().map(|u| u.id().unescaped().to_owned()).collect(),
    }
}

/// Whether a policy with `constraint` can apply to `action` (`call_tool:<name>` is in
/// `call_tool`; no other action has a parent).
fn applies(constraint: &ActionConstraint, action: &str) -> bool {
    let child_of_call = action.starts_with("call_tool:");
    let fits = |name: &str| name == action || (child_of_call && name == "call_tool");
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => uid.id().unescaped() == action,
        ActionConstraint::In(uids) => uids.iter().any(|u| fits(u.id().unescaped())),
    }
}

/// The actions that are not one tool's call.
const FIXED_ACTIONS: [&str; 4] = ["list_tools", "read_resource", "get_prompt", "complete"];
/// Stands for a tool no policy names, when slicing.
const ANY_TOOL: &str = "call_tool:";

/// The policies that can apply to one action, by effect and by whether they read the
/// request's context: those that do not are decided once per principal and target.
#[derive(Debug, Clone, Default)]
struct Slice {
    fixed_permits: PolicySet,
    fixed_forbids: PolicySet,
    permits: PolicySet,
    forbids: PolicySet,
}

impl Slice {
    fn of<'a>(policies: impl Iterator<Item = &'a Policy>) -> Self {
        let mut slice = Self::default();
        for policy in policies {
            let set = match (policy.effect(), reads_context(&policy.to_string())) {
                (Effect::Permit, false) => &mut slice.fixed_permits,
                (Effect::Forbid, false) => &mut slice.fixed_forbids,
                (Effect::Permit, true) => &mut slice.permits,
                (Effect::Forbid, true) => &mut slice.forbids,
            };
            // Ids are unique in the set they come from, so adding cannot fail.
            let _ = set.add(policy.clone());
        }
        slice
    }
}

/// A conservative test: any mention of `context` reads it.
fn reads_context(policy_text: &str) -> bool {
    policy_text.contains("context")
}

/// What the policies of a slice that read no context decided for one principal and
/// target: the permits and forbids satisfied, and the forbids that failed.
#[derive(Debug, Default)]
pub(crate) struct Fixed {
    permits: Vec<PolicyId>,
    forbids: Vec<PolicyId>,
}

/// The policies of `set` that `request` satisfies, and those that failed to evaluate.
fn satisfied(
    set: &PolicySet,
    request: &cedar_policy::Request,
    entities: &cedar_policy::Entities,
    meta: &HashMap<PolicyId, Meta>,
) -> (Vec<PolicyId>, Vec<PolicyId>) {
    if set.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let response = Authorizer::new().is_authorized(request, set, entities);
    let failed: Vec<PolicyId> = response
        .diagnostics()
        .errors()
        .map(|error| {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(error) = error;
            tracing::warn!(
                policy = meta.get(error.policy_id()).map_or("?", |m| m.name.as_str()),
                %error,
                "a policy failed to evaluate"
            );
            error.policy_id().clone()
        })
        .collect();
    (response.diagnostics().reason().cloned().collect(), failed)
}

/// A compiled set of policies.
#[derive(Debug, Clone)]
pub struct Rules {
    policies: PolicySet,
    /// For each action a policy names (and the fixed ones), the policies that can apply.
    slices: HashMap<String, Slice>,
    /// The policies that can apply to a call of a tool no policy names.
    any_tool: Slice,
    meta: HashMap<PolicyId, Meta>,
    files: Vec<(String, String)>,
    /// The context values the policies can read that cost something to build.
    needs: facts::Needs,
    entities: std::sync::Arc<facts::EntityCache>,
}

impl Rules {
    /// The built-in policies.
    pub fn builtin() -> Result<Self, Vec<PolicyProblem>> {
        Self::parse(&[(BUILTIN_FILE.to_owned(), BUILTIN.to_owned())])
    }

    /// The shipped session policy (see [`after_untrusted`]).
    pub fn after_untrusted(confirm: Confirm) -> Result<Self, Vec<PolicyProblem>> {
        Self::parse(&[(BUILTIN_FILE.to_owned(), after_untrusted(confirm))])
    }

    /// Parses policy files (name, text); each problem names its file, line and column.
    pub fn parse(files: &[(String, String)]) -> Result<Self, Vec<PolicyProblem>> {
        let mut policies = PolicySet::new();
        let mut meta = HashMap::new();
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (index, (file, text)) in files.iter().enumerate() {
            let parsed = match PolicySet::from_str(text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    problems.extend(
                        errors
                            .iter()
                            .map(|error| problem(file, text, error, error.to_string())),
                    );
                    continue;
                }
            };
            if parsed.templates().next().is_some() {
                problems.push(problem_at(
                    file,
                    text,
                    0,
                    "policy templates (?principal, ?resource) are not supported; write each policy out".into(),
                ));
            }
            for (n, policy) in parsed.policies().enumerate() {
                let offset = locate(text, policy);
                let name = policy
                    .annotation("id")
                    .map_or_else(|| format!("{file}#{}", n + 1), str::to_owned);
                if !names.insert(name.clone()) {
                    problems.push(problem_at(
                        file,
                        text,
                        offset,
                        format!("two policies have the @id {name:?}"),
                    ));
                    continue;
                }
                let (confirm, cost) = match effects(policy) {
                    Ok(effects) => effects,
                    Err(message) => {
                        problems.push(problem_at(
                            file,
                            text,
                            offset,
                            format!("{name:?}: {message}"),
                        ));
                        continue;
                    }
                };
                let id = PolicyId::new(format!("{index}.{n}"));
                if let Err(error) = policies.add(policy.new_id(id.clone())) {
                    problems.push(problem_at(file, text, offset, error.to_string()));
                    continue;
                }
                meta.insert(
                    id,
                    Meta {
                        name,
                        file: index,
                        confirm,
                        cost,
                    },
                );
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut actions: BTreeSet<String> = FIXED_ACTIONS.iter().map(|a| (*a).to_owned()).collect();
        for policy in policies.policies() {
            actions.extend(
                named_actions(&policy.action_constraint())
                    .into_iter()
                    .filter(|name| name.starts_with("call_tool:")),
            );
        }
        let slice = |action: &str| {
            Slice::of(
                policies
                    .policies()
                    .filter(|policy| applies(&policy.action_constraint(), action)),
            )
        };
        let slices = actions.iter().map(|a| (a.clone(), slice(a))).collect();
        let any_tool = slice(ANY_TOOL);
        let context_readers: Vec<String> = policies
            .policies()
            .map(ToString::to_string)
            .filter(|text| reads_context(text))
            .collect();
        let needs = facts::Needs::of(context_readers.iter().map(String::as_str));
        Ok(Self {
            policies,
            slices,
            any_tool,
            meta,
            needs,
            files: files.to_vec(),
            entities: Default::default(),
        })
    }

    /// The tools the policies name in `call_tool:<name>` actions.
    pub fn named_tools(&self) -> BTreeSet<String> {
        self.slices
            .keys()
            .filter_map(|action| action.strip_prefix("call_tool:"))
            .map(str::to_owned)
            .collect()
    }

    /// Checks every policy against the model for `tools` (unknown actions, entity types
    /// and attributes; type errors), or against the operator's own `schema` text.
    /// Tools a policy names that are not among `tools` get untyped arguments; a problem
    /// of a policy naming one comes back as a warning (the tool may not have been
    /// discovered yet), every other problem as an error.
    pub fn validate(
        &self,
        tools: &[ToolFacts<'_>],
        schema: Option<&(String, String)>,
    ) -> Result<Vec<PolicyProblem>, Vec<PolicyProblem>> {
        let known: BTreeSet<&str> = tools.iter().map(|t| t.name).collect();
        let unknown: Vec<String> = match schema {
            Some(_) => Vec::new(),
            None => self
                .named_tools()
                .into_iter()
                .filter(|name| !known.contains(name.as_str()))
                .collect(),
        };
        let model = match schema {
            Some((file, text)) => model::parse_schema(text).map_err(|message| {
                vec![PolicyProblem {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                    message,
                }]
            })?,
            None => model::parse_schema(&schema_text(tools, &unknown)).map_err(|message| {
                vec![PolicyProblem {
                    file: "(model)".into(),
                    line: 1,
                    column: 1,
                    message,
                }]
            })?,
        };
        let result = Validator::new(model).validate(&self.policies, ValidationMode::Strict);
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for error in result.validation_errors() {
            let Some(meta) = self.meta.get(error.policy_id()) else {
                continue;
            };
            let (file, text) = &self.files[meta.file];
            let message = error.to_string().replace(
                &format!("`{}`", error.policy_id()),
                &format!("{:?}", meta.name),
            );
            let names_unknown = self
                .policies
                .policy(error.policy_id())
                .map(|p| named_actions(&p.action_constraint()))
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.strip_prefix("call_tool:"))
                .any(|tool| unknown.iter().any(|u| u == tool));
            if names_unknown {
                warnings.push(problem(
                    file,
                    text,
                    error,
                    format!("{message} (it names a tool no upstream offers now, so its arguments cannot be checked yet)"),
                ));
            } else {
                errors.push(problem(file, text, error, message));
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(errors)
        }
    }

    /// The policies' names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.meta.values().map(|m| m.name.as_str())
    }

    fn slice(&self, action: &str) -> &Slice {
        self.slices.get(action).unwrap_or(&self.any_tool)
    }

    /// Decides whether `principal` may call `tool` with `arguments` (already valid
    /// against its schema).
    pub fn decide_call(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        arguments: &Map<String, Value>,
        request: &RequestFacts,
    ) -> Verdict {
        self.decide(
            principal,
            &call_action(tool.name),
            &Target::Tool(*tool),
            request,
            Some(arguments),
        )
    }

    /// Decides `action` (`read_resource`, `get_prompt`, `complete`, `list_tools`) on
    /// `target`.
    pub fn decide_other(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
        request: &RequestFacts,
    ) -> Verdict {
        self.decide(principal, action, target, request, None)
    }

    /// Whether `principal` could be allowed to call `tool` with some arguments: what a
    /// list shows. A permit that depends on the arguments shows the tool; the call is
    /// then decided on its arguments.
    pub fn could_call(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> bool {
        let action = call_action(tool.name);
        let Some((cedar_request, prepared)) =
            self.unknown_arguments(principal, &action, tool, request)
        else {
            return false;
        };
        let slice = self.slice(&action);
        let fixed = self.fixed(slice, &cedar_request, &prepared);
        if !fixed.forbids.is_empty() {
            return false;
        }
        let partial = |set: &PolicySet| {
            Authorizer::new().is_authorized_partial(&cedar_request, set, &prepared.entities)
        };
        if !slice.forbids.is_empty()
            && partial(&slice.forbids)
                .definitely_satisfied()
                .next()
                .is_some()
        {
            return false;
        }
        !fixed.permits.is_empty()
            || (!slice.permits.is_empty()
                && partial(&slice.permits).decision() != Some(Decision::Deny))
    }

    /// The request for `action` on `tool` whatever its arguments, and the entities it
    /// names.
    fn unknown_arguments(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> Option<(cedar_policy::Request, std::sync::Arc<facts::Prepared>)> {
        let target = Target::Tool(*tool);
        let cedar_request =
            facts::cedar_request(principal, action, &target, request, None, self.needs)?;
        Some((
            cedar_request,
            self.entities.prepared(principal, action, &target)?,
        ))
    }

    /// Whether a list shows `tool` to `principal`: it could be called, and no forbid on
    /// `list_tools` hides it.
    pub fn listed(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> bool {
        self.could_call(principal, tool, request) && !self.hides(principal, tool, request)
    }

    /// Whether a forbid on `list_tools` hides `tool` from `principal`'s lists (calls
    /// are decided by `call_tool` alone).
    fn hides(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> bool {
        let slice = self.slice("list_tools");
        if slice.fixed_forbids.is_empty() && slice.forbids.is_empty() {
            return false;
        }
        let Some((cedar_request, prepared)) =
            self.unknown_arguments(principal, "list_tools", tool, request)
        else {
            return true;
        };
        !self
            .fixed(slice, &cedar_request, &prepared)
            .forbids
            .is_empty()
            || (!slice.forbids.is_empty()
                && Authorizer::new()
                    .is_authorized_partial(&cedar_request, &slice.forbids, &prepared.entities)
                    .definitely_satisfied()
                    .next()
                    .is_some())
    }

    fn decide(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
        request: &RequestFacts,
        arguments: Option<&Map<String, Value>>,
    ) -> Verdict {
        let built = std::cell::OnceCell::new();
        self.decide_built(principal, action, target, request, || {
            built
                .get_or_init(|| {
                    facts::cedar_request(principal, action, target, request, arguments, self.needs)
                })
                .as_ref()
        })
    }

    /// Decides from the verdict kept for the session's flags when these policies read
    /// nothing else; otherwise on the request `build` gives (holding at least what these
    /// policies read), built only then.
    fn decide_built<'r>(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
        request: &RequestFacts,
        build: impl FnOnce() -> Option<&'r cedar_policy::Request>,
    ) -> Verdict {
        if self.needs.only_session_flags() {
            return self.decide_by_flags(principal, action, target, request);
        }
        match build() {
            Some(cedar_request) => self.decide_request(principal, action, target, cedar_request),
            None => unbuildable(action),
        }
    }

    /// Decides for policies whose context holds only the session's two flags (the
    /// built-in and shipped policies): a request is built and decided once per pair of
    /// flags for each principal, action and target, and the verdict kept with their
    /// entities. A policy that reads anything else finds it missing and fails to
    /// evaluate, so no verdict is kept that another value could have changed.
    fn decide_by_flags(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
        request: &RequestFacts,
    ) -> Verdict {
        let Some(prepared) = self.entities.prepared(principal, action, target) else {
            return unbuildable(action);
        };
        prepared.by_flags[facts::flags_index(request)]
            .get_or_init(|| {
                match facts::cedar_request(principal, action, target, request, None, self.needs) {
                    Some(cedar_request) => self.decide_prepared(&prepared, action, &cedar_request),
                    None => unbuildable(action),
                }
            })
            .clone()
    }

    /// Decides a request already built (with a context holding at least what these
    /// policies read).
    fn decide_request(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
        cedar_request: &cedar_policy::Request,
    ) -> Verdict {
        match self.entities.prepared(principal, action, target) {
            Some(prepared) => self.decide_prepared(&prepared, action, cedar_request),
            None => unbuildable(action),
        }
    }

    fn decide_prepared(
        &self,
        prepared: &facts::Prepared,
        action: &str,
        cedar_request: &cedar_policy::Request,
    ) -> Verdict {
        let slice = self.slice(action);
        let fixed = self.fixed(slice, cedar_request, prepared);
        let (forbids, failed) = satisfied(
            &slice.forbids,
            cedar_request,
            &prepared.entities,
            &self.meta,
        );
        let names = |ids: &mut dyn Iterator<Item = &PolicyId>| -> Vec<String> {
            ids.filter_map(|id| self.meta.get(id).map(|m| m.name.clone()))
                .collect()
        };
        // A forbid that cannot be evaluated refuses: fail closed.
        let refusing: Vec<String> = names(&mut fixed.forbids.iter().chain(&forbids).chain(&failed));
        if !refusing.is_empty() {
            return Verdict::refused(refusing);
        }
        let (permits, _) = satisfied(
            &slice.permits,
            cedar_request,
            &prepared.entities,
            &self.meta,
        );
        let deciding: Vec<&Meta> = fixed
            .permits
            .iter()
            .chain(&permits)
            .filter_map(|id| self.meta.get(id))
            .collect();
        if deciding.is_empty() {
            return Verdict::refused(Vec::new());
        }
        let confirm = deciding
            .iter()
            .filter_map(|m| m.confirm)
            // An operator's approval is stronger than the user's.
            .max_by_key(|confirm| *confirm == Confirm::Approve);
        Verdict {
            allowed: true,
            policies: deciding.iter().map(|m| m.name.clone()).collect(),
            confirm,
            cost: deciding.iter().map(|m| m.cost).sum(),
        }
    }

    /// What the policies of `slice` that read no context decide on these entities:
    /// asked once per principal and target (a forbid that fails counts as satisfied).
    fn fixed<'p>(
        &self,
        slice: &Slice,
        request: &cedar_policy::Request,
        prepared: &'p facts::Prepared,
    ) -> &'p Fixed {
        prepared.fixed.get_or_init(|| {
            let (permits, _) = satisfied(
                &slice.fixed_permits,
                request,
                &prepared.entities,
                &self.meta,
            );
            let (mut forbids, failed) = satisfied(
                &slice.fixed_forbids,
                request,
                &prepared.entities,
                &self.meta,
            );
            forbids.extend(failed);
            Fixed { permits, forbids }
        })
    }
}

/// The policies in force: the operator's files (or the built-in policies), and the
/// shipped session policy unless it is turned off.
#[derive(Debug, Clone)]
pub struct Policies {
    rules: Rules,
    session: Option<Rules>,
    /// The shipped tightening (`forbid_outbound`), when on.
    outbound: Option<Rules>,
    from_files: bool,
}

impl Policies {
    /// Compiles `[policy]` and checks it against the model for `tools` (or the
    /// operator's own model). `Ok` carries the warnings; `Err` every problem, with its
    /// file and line.
    pub fn compile(
        config: &warden_config::Policy,
        tools: &[ToolFacts<'_>],
    ) -> Result<(Self, Vec<PolicyProblem>), Vec<PolicyProblem>> {
        let files: Vec<(String, String)> = config
            .files
            .iter()
            .map(|f| (f.name.clone(), f.text.clone()))
            .collect();
        let rules = if files.is_empty() {
            Rules::builtin()?
        } else {
            Rules::parse(&files)?
        };
        let schema = config
            .schema
            .as_ref()
            .map(|f| (f.name.clone(), f.text.clone()));
        let mut warnings = rules.validate(tools, schema.as_ref())?;
        let session = match config.after_untrusted {
            Confirm::Elicit | Confirm::Approve => {
                let session = Rules::after_untrusted(config.after_untrusted)?;
                warnings.extend(session.validate(tools, schema.as_ref())?);
                Some(session)
            }
            Confirm::Deny | Confirm::Never => None,
        };
        let outbound = if config.forbid_outbound {
            let outbound = Rules::parse(&[(BUILTIN_FILE.to_owned(), NO_OUTBOUND.to_owned())])?;
            warnings.extend(outbound.validate(tools, schema.as_ref())?);
            Some(outbound)
        } else {
            None
        };
        Ok((
            Self {
                rules,
                session,
                outbound,
                from_files: !files.is_empty(),
            },
            warnings,
        ))
    }

    /// Whether the operator's files are in force (not the built-in policies).
    pub fn from_files(&self) -> bool {
        self.from_files
    }

    /// Checks the policies in force against the model for `tools` again (the catalogue
    /// changed); the problems found, if any.
    pub fn recheck(&self, tools: &[ToolFacts<'_>]) -> Vec<PolicyProblem> {
        [Some(&self.rules), self.session.as_ref()]
            .into_iter()
            .flatten()
            .flat_map(|rules| match rules.validate(tools, None) {
                Ok(warnings) => warnings,
                Err(errors) => errors,
            })
            .collect()
    }

    /// Decides a call; an allowed call then meets the session policy, which may add a
    /// confirmation (and is named among the deciding policies when it does).
    pub fn decide_call(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        arguments: &Map<String, Value>,
        request: &RequestFacts,
    ) -> Verdict {
        let action = call_action(tool.name);
        let target = Target::Tool(*tool);
        // Sets that read only the session's flags decide from what they keep; the others
        // share one request, with what any of them reads, built when first needed.
        let needs = [&self.session, &self.outbound]
            .into_iter()
            .flatten()
            .fold(self.rules.needs, |needs, rules| needs.or(rules.needs));
        let shared = std::cell::OnceCell::new();
        let decide = |rules: &Rules| {
            rules.decide_built(principal, &action, &target, request, || {
                shared
                    .get_or_init(|| {
                        facts::cedar_request(
                            principal,
                            &action,
                            &target,
                            request,
                            Some(arguments),
                            needs,
                        )
                    })
                    .as_ref()
            })
        };
        let mut verdict = decide(&self.rules);
        if !verdict.allowed {
            return verdict;
        }
        if let Some(outbound) = &self.outbound {
            let refused = decide(outbound);
            // Its forbid, satisfied, names itself; otherwise nothing there applies.
            if !refused.policies.is_empty() {
                return refused;
            }
        }
        if let Some(session) = &self.session {
            let asks = decide(session);
            if let (true, Some(confirm)) = (asks.allowed, asks.confirm) {
                verdict.policies.extend(asks.policies);
                if verdict.confirm != Some(Confirm::Approve) {
                    verdict.confirm = Some(confirm);
                }
            }
        }
        verdict
    }

    /// Whether some arguments could make a call of `tool` allowed (see
    /// [`Rules::could_call`]).
    pub fn could_call(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> bool {
        self.rules.could_call(principal, tool, request)
    }

    /// Whether a list shows `tool` to `principal` (see [`Rules::listed`]).
    pub fn listed(
        &self,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> bool {
        self.rules.listed(principal, tool, request)
    }

    /// Decides `read_resource`, `get_prompt` or `complete` on `target`.
    pub fn decide_other(
        &self,
        principal: &PrincipalFacts,
        action: &str,
        target: &Target<'_>,
        request: &RequestFacts,
    ) -> Verdict {
        self.rules.decide_other(principal, action, target, request)
    }
}

/// A request that could not be built is refused: fail closed.
fn unbuildable(action: &str) -> Verdict {
    tracing::warn!(action, "the policy request could not be built; refused");
    Verdict::refused(Vec::new())
}

/// Unix seconds as RFC 3339 (UTC), as Cedar's `datetime` takes it.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn write_file_schema() -> Value {
        json!({"type": "object", "properties": {
            "path": {"type": "string"}, "content": {"type": "string"},
            "mode": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
            "options": {"type": "object"}
        }, "required": ["path", "content"]})
    }

    fn send_email_schema() -> Value {
        json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]})
    }

    fn tools<'a>(write: &'a Value, send: &'a Value) -> Vec<ToolFacts<'a>> {
        vec![
            ToolFacts {
                name: "fs__write_file",
                upstream: "fs",
                kind: ToolKind::Write,
                untrusted: false,
                input_schema: write,
                annotations: None,
            },
            ToolFacts {
                name: "mail__send",
                upstream: "mail",
                kind: ToolKind::Destructive,
                untrusted: false,
                input_schema: send,
                annotations: None,
            },
        ]
    }

    fn key(scope: &str) -> PrincipalFacts {
        PrincipalFacts {
            id: "key_1".into(),
            tenant: "acme".into(),
            scope: scope.into(),
            name: "laptop".into(),
            ..PrincipalFacts::default()
        }
    }

    fn request() -> RequestFacts {
        RequestFacts {
            client_name: "claude".into(),
            era: "modern",
            address: "127.0.0.1".parse().unwrap(),
            time: 1_796_336_274,
            session: SessionFacts::default(),
        }
    }

    fn arguments(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn file(text: &str) -> Vec<(String, String)> {
        vec![("policies/acme.cedar".to_owned(), text.to_owned())]
    }

    #[test]
    fn the_built_in_policies_fit_the_model() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let rules = Rules::builtin().unwrap();
        assert_eq!(rules.validate(&catalogue, None).unwrap(), []);
        assert!(rules.names().any(|name| name == "builtin.write-scope"));
        for confirm in [Confirm::Elicit, Confirm::Approve] {
            let session = Rules::after_untrusted(confirm).unwrap();
            assert_eq!(session.validate(&catalogue, None).unwrap(), []);
        }
    }

    #[test]
    fn context_values_are_built_only_for_policies_that_name_them() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let needs = |rules: &Rules| (rules.needs.arguments, rules.needs.tools_used);
        // The shipped sets read neither: a call's arguments are not converted for them.
        assert_eq!(needs(&Rules::builtin().unwrap()), (false, false));
        assert_eq!(
            needs(&Rules::after_untrusted(Confirm::Elicit).unwrap()),
            (false, false)
        );
        // A set that names them gets them, and decides on them.
        let rules = Rules::parse(&file(
            r#"@id("second-call") permit (principal, action == Action::"call_tool:fs__write_file", resource)
when { context.session.tools_used.contains("fs__write_file") && context.arguments.path like "/srv/*" };"#,
        ))
        .unwrap();
        assert_eq!(rules.validate(&catalogue, None).unwrap(), []);
        assert_eq!(needs(&rules), (true, true));
        let mut used = request();
        used.session.tools_used = vec!["fs__write_file".into()];
        let call = |request: &RequestFacts, path: &str| {
            rules
                .decide_call(
                    &key("read"),
                    &catalogue[0],
                    &arguments(json!({"path": path, "content": "x"})),
                    request,
                )
                .allowed
        };
        assert!(call(&used, "/srv/a"));
        assert!(!call(&used, "/etc/a"));
        assert!(!call(&request(), "/srv/a"));
    }

    #[test]
    fn verdicts_on_the_session_flags_alone_are_kept_per_flag_pair_and_nothing_else_is_missed() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let no_arguments = Map::new();
        // The shipped sets read nothing but the two flags.
        assert!(Rules::builtin().unwrap().needs.only_session_flags());
        let session = Rules::after_untrusted(Confirm::Elicit).unwrap();
        assert!(session.needs.only_session_flags());
        // The same caller, tool and flags get the verdict they got; other flags their own.
        let with_flags = |untrusted_seen: bool, private_read: bool| {
            let mut facts = request();
            facts.session.untrusted_seen = untrusted_seen;
            facts.session.private_read = private_read;
            facts.session.calls = 7;
            facts
        };
        let asks = |facts: &RequestFacts| {
            let verdict = session.decide_call(&key("write"), &catalogue[0], &no_arguments, facts);
            verdict.allowed && verdict.confirm == Some(Confirm::Elicit)
        };
        for _ in 0..2 {
            assert!(!asks(&with_flags(false, false)));
            assert!(asks(&with_flags(true, false)));
            assert!(asks(&with_flags(true, true)));
            assert!(!asks(&with_flags(false, true)));
        }
        // A set that reads another value is decided on it at every call.
        let by_client = |text: &str| {
            Rules::parse(&file(&format!(
                "permit (principal, action, resource);\n@id(\"no-evil\")\nforbid (principal, action, resource) when {{ {text} == \"evil\" }};"
            )))
            .unwrap()
        };
        let allowed = |rules: &Rules, client: &str| {
            let mut facts = request();
            client.clone_into(&mut facts.client_name);
            rules
                .decide_call(&key("write"), &catalogue[0], &no_arguments, &facts)
                .allowed
        };
        let named = by_client("context.client_name");
        assert!(named.needs.client_name && !named.needs.only_session_flags());
        assert!(!allowed(&named, "evil"));
        assert!(allowed(&named, "claude"));
        assert!(!allowed(&named, "evil"));
        // Read in a way the word test misses, the value is absent: the forbid cannot be
        // evaluated and refuses every client (fail closed), never a kept verdict.
        let hidden = by_client(r#"context["\u{63}lient_name"]"#);
        assert!(hidden.needs.only_session_flags());
        assert!(!allowed(&hidden, "claude"));
        assert!(!allowed(&hidden, "evil"));
        // Words inside other words are not reads; comments outside a policy are not it.
        let worded = Rules::parse(&file(
            "// calls, era and time, in a comment\n@id(\"operators\")\npermit (principal, action, resource) when { context.session.untrusted_seen || principal.name == \"operator\" };",
        ))
        .unwrap();
        assert!(worded.needs.only_session_flags());
    }

    #[test]
    fn bad_policies_are_refused_with_cedars_words_and_their_line() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let syntax = Rules::parse(&file(
            "permit(principal, action, resource)\nwhen { principal.x == };",
        ))
        .unwrap_err();
        assert_eq!(
            (syntax[0].line, syntax[0].file.as_str()),
            (2, "policies/acme.cedar"),
            "{syntax:?}"
        );
        let typed = Rules::parse(&file(
            "// a comment\n@id(\"kinds\")\npermit(principal, action in Action::\"call_tool\", resource)\nwhen { resource.kind == 3 };",
        ))
        .unwrap()
        .validate(&catalogue, None)
        .unwrap_err();
        assert!(typed[0].message.contains("not compatible"), "{typed:?}");
        assert!(typed[0].line >= 3, "{typed:?}");
        let unknown = Rules::parse(&file(
            "permit(principal, action == Action::\"delete_everything\", resource);",
        ))
        .unwrap()
        .validate(&catalogue, None)
        .unwrap_err();
        assert!(
            unknown[0].message.contains("unrecognized action"),
            "{unknown:?}"
        );
        // An argument the tool does not take, read without `has`: refused.
        let unguarded = Rules::parse(&file(
            "permit(principal, action in Action::\"call_tool\", resource) when { context.arguments.path like \"/srv/*\" };",
        ))
        .unwrap()
        .validate(&catalogue, None)
        .unwrap_err();
        assert!(unguarded[0].message.contains("mail__send"), "{unguarded:?}");
    }

    #[test]
    fn argument_conditions_forbids_groups_and_effects_decide() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let rules = Rules::parse(&file(
            r#"
@id("data-dir-only")
permit (principal, action == Action::"call_tool:fs__write_file", resource)
when { context.arguments.path like "/srv/data/*" };

@id("mail-our-domain") @confirm("approve") @cost("5")
permit (principal in Group::"ops", action == Action::"call_tool:mail__send", resource)
when { context.arguments.to like "*@example.com" };

@id("no-intern-writes")
forbid (principal, action in Action::"call_tool", resource)
when { principal.hasTag("role") && principal.getTag("role") == "intern" };
"#,
        ))
        .unwrap();
        assert_eq!(rules.validate(&catalogue, None).unwrap(), []);
        let decide = |principal: &PrincipalFacts, tool: usize, args: Value| {
            rules.decide_call(principal, &catalogue[tool], &arguments(args), &request())
        };
        let writer = key("write");
        let inside = decide(&writer, 0, json!({"path": "/srv/data/a", "content": "x"}));
        assert!(inside.allowed);
        assert_eq!(inside.policies, ["data-dir-only"]);
        let outside = decide(&writer, 0, json!({"path": "/etc/passwd", "content": "x"}));
        assert!(!outside.allowed);
        assert!(outside.policies.is_empty(), "default deny names no policy");

        let mut intern = key("write");
        intern.tags.insert("role".into(), "intern".into());
        let refused = decide(&intern, 0, json!({"path": "/srv/data/a", "content": "x"}));
        assert!(!refused.allowed);
        assert_eq!(
            refused.policies,
            ["no-intern-writes"],
            "forbid wins and says so"
        );

        let mut ops = PrincipalFacts {
            id: "oauth:alice".into(),
            tenant: "acme".into(),
            scope: "write".into(),
            groups: vec!["ops".into()],
            ..PrincipalFacts::default()
        };
        let mail = decide(&ops, 1, json!({"to": "bob@example.com"}));
        assert!(mail.allowed);
        assert_eq!(mail.confirm, Some(Confirm::Approve));
        assert_eq!(mail.cost, 5);
        assert!(!decide(&ops, 1, json!({"to": "eve@evil.example"})).allowed);
        ops.groups.clear();
        assert!(!decide(&ops, 1, json!({"to": "bob@example.com"})).allowed);
    }

    #[test]
    fn lists_show_what_some_arguments_could_unlock_and_hide_what_nothing_can() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let rules = Rules::parse(&file(
            r#"
@id("data-dir-only")
permit (principal, action == Action::"call_tool:fs__write_file", resource)
when { context.arguments.path like "/srv/data/*" };

@id("no-mail-for-acme")
forbid (principal, action == Action::"call_tool:mail__send", resource)
when { principal.tenant == "acme" };

@id("mail-with-to")
permit (principal, action == Action::"call_tool:mail__send", resource)
when { context.arguments has to };
"#,
        ))
        .unwrap();
        let writer = key("write");
        assert!(rules.could_call(&writer, &catalogue[0], &request()));
        assert!(!rules.could_call(&writer, &catalogue[1], &request()));
        let mut other = key("write");
        other.tenant = "globex".into();
        assert!(rules.could_call(&other, &catalogue[1], &request()));

        // A forbid on `list_tools` hides a tool from lists; its calls are still decided
        // by `call_tool`.
        let hidden = Rules::parse(&file(
            r#"
@id("all") permit (principal, action, resource);
@id("unlisted") forbid (principal, action == Action::"list_tools", resource == Tool::"mail__send");
"#,
        ))
        .unwrap();
        assert!(!hidden.listed(&writer, &catalogue[1], &request()));
        assert!(hidden.listed(&writer, &catalogue[0], &request()));
        assert!(hidden.could_call(&writer, &catalogue[1], &request()));
        assert!(
            hidden
                .decide_call(
                    &writer,
                    &catalogue[1],
                    &arguments(json!({"to": "a@b.c"})),
                    &request()
                )
                .allowed
        );
    }

    #[test]
    fn a_forbid_that_fails_to_evaluate_refuses_and_a_failing_permit_does_not_apply() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        // Neither policy validates (an attribute keys do not have), so only a set that
        // skipped validation could hold them: decisions still fail closed.
        let rules = Rules::parse(&file(
            r#"
@id("everyone") permit (principal, action, resource);
@id("broken-forbid") forbid (principal, action, resource) when { principal.nickname == "x" };
"#,
        ))
        .unwrap();
        let verdict = rules.decide_call(
            &key("write"),
            &catalogue[0],
            &arguments(json!({"path": "/a", "content": "x"})),
            &request(),
        );
        assert!(!verdict.allowed);
        assert_eq!(verdict.policies, ["broken-forbid"]);
        let permits = Rules::parse(&file(
            r#"@id("broken-permit") permit (principal, action, resource) when { principal.nickname == "x" };"#,
        ))
        .unwrap();
        assert!(
            !permits
                .decide_call(
                    &key("write"),
                    &catalogue[0],
                    &arguments(json!({})),
                    &request()
                )
                .allowed
        );
    }

    #[test]
    fn effects_are_checked_when_policies_are_read() {
        for (text, expected) in [
            (
                r#"@id("a") @confirm("maybe") permit (principal, action, resource);"#,
                "@confirm must be",
            ),
            (
                r#"@id("b") @cost("lots") permit (principal, action, resource);"#,
                "@cost must be a whole number",
            ),
            (
                r#"@id("c") @confirm("elicit") forbid (principal, action, resource);"#,
                "permits only",
            ),
            (
                "@id(\"d\") permit (principal, action, resource);\n@id(\"d\") permit (principal, action, resource);",
                "two policies have the @id",
            ),
        ] {
            let problems = Rules::parse(&file(text)).unwrap_err();
            assert!(problems[0].message.contains(expected), "{problems:?}");
        }
        let problems = Rules::parse(&file(
            "// first\n@id(\"late\") @cost(\"x\")\npermit (principal, action, resource);",
        ))
        .unwrap_err();
        assert_eq!(problems[0].line, 2, "{problems:?}");
    }

    #[test]
    fn a_tool_no_upstream_offers_yet_is_a_warning_not_an_error() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let rules = Rules::parse(&file(
            r#"@id("later") permit (principal, action == Action::"call_tool:crm__export", resource) when { context.arguments.path like "/x/*" };"#,
        ))
        .unwrap();
        let warnings = rules.validate(&catalogue, None).unwrap();
        assert!(
            warnings[0].message.contains("no upstream offers"),
            "{warnings:?}"
        );
        let own_schema = ("own.cedarschema".to_owned(), schema_text(&catalogue, &[]));
        let errors = rules.validate(&catalogue, Some(&own_schema)).unwrap_err();
        assert!(
            errors[0].message.contains("unrecognized action"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_tightening_refuses_outbound_tools_once_untrusted_and_private_met() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let hints = json!({"openWorldHint": true});
        let mut catalogue = tools(&write, &send);
        catalogue[1].annotations = Some(&hints);
        let config = warden_config::Policy {
            forbid_outbound: true,
            ..warden_config::Policy::default()
        };
        let (policies, _) = Policies::compile(&config, &catalogue).unwrap();
        let mut met = request();
        let mail = arguments(json!({"to": "a@b.c"}));
        let file = arguments(json!({"path": "/a", "content": "x"}));
        met.session.untrusted_seen = true;
        assert!(
            policies
                .decide_call(&key("write"), &catalogue[1], &mail, &met)
                .allowed
        );
        met.session.private_read = true;
        let refused = policies.decide_call(&key("write"), &catalogue[1], &mail, &met);
        assert!(!refused.allowed);
        assert_eq!(
            refused.policies,
            ["builtin.no-outbound-after-untrusted-and-private"]
        );
        assert!(
            policies
                .decide_call(&key("write"), &catalogue[0], &file, &met)
                .allowed
        );
    }

    #[test]
    fn the_session_policy_asks_only_after_untrusted_text() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let session = Rules::after_untrusted(Confirm::Approve).unwrap();
        let mut tainted = request();
        let args = arguments(json!({"path": "/a", "content": "x"}));
        let clean = session.decide_call(&key("write"), &catalogue[0], &args, &tainted);
        assert!(!clean.allowed, "nothing to add in a clean session");
        tainted.session.untrusted_seen = true;
        let asks = session.decide_call(&key("write"), &catalogue[0], &args, &tainted);
        assert_eq!(asks.confirm, Some(Confirm::Approve));
        assert_eq!(asks.policies, ["builtin.confirm-after-untrusted"]);
    }

    fn kind_of(n: u8) -> ToolKind {
        match n % 3 {
            0 => ToolKind::Read,
            1 => ToolKind::Write,
            _ => ToolKind::Destructive,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Without policy files nothing changes: the built-in policies decide exactly as
        /// the scope and kind rules always did (a read key reaches read tools; write and
        /// admin keys every tool), whatever the arguments.
        #[test]
        fn the_built_in_policies_decide_as_scopes_and_kinds_did(
            scope in 0u8..3,
            kind in 0u8..3,
            oauth in any::<bool>(),
            path in "[a-z/]{0,12}",
            mode in any::<i64>(),
        ) {
            let scope = ["read", "write", "admin"][usize::from(scope)];
            let kind = kind_of(kind);
            let input_schema = write_file_schema();
            let tool = ToolFacts { name: "fs__write_file", upstream: "fs", kind, untrusted: false, input_schema: &input_schema, annotations: None };
            let rules = Rules::builtin().unwrap();
            let mut principal = key(scope);
            if oauth {
                principal.id = "oauth:alice".into();
                principal.name.clear();
            }
            let ceiling = if scope == "read" { ToolKind::Read } else { ToolKind::Destructive };
            let args = arguments(json!({"path": path, "content": "x", "mode": mode}));
            let call = rules.decide_call(&principal, &tool, &args, &request());
            prop_assert_eq!(call.allowed, kind <= ceiling);
            prop_assert_eq!(call.confirm, None);
            prop_assert_eq!(rules.could_call(&principal, &tool, &request()), kind <= ceiling);
        }
    }
}
