//! Compiled per-route scope rules: which OAuth scopes a JSON-RPC message needs, decided without allocating.
//!
//! Rules (`[routes.tools]`, `[routes.resources]`, `[routes.prompts]`, `[routes.methods]` in
//! gateway.toml):
//! - every message needs the route's `scopes`;
//! - `methods` adds scopes per JSON-RPC method (exact names; an unlisted method adds nothing);
//! - `tools` (by `params.name` of `tools/call`), `prompts` (`prompts/get`) and `resources` (`params.uri` of
//!   `resources/read|subscribe|unsubscribe`) map an exact name or a glob to the scopes it needs, all of
//!   them required. An exact key beats any glob; among globs the longer pattern wins (ties: the
//!   lexicographically smaller pattern, i.e. the first in table order). If a table is non-empty, a
//!   target that matches none of its keys is DENIED (`no_rule`): listing rules is an allow-list, and
//!   `"*" = [...]` is the explicit catch-all. An EMPTY (or absent) table means "no per-target rule":
//!   the route scopes (and `methods`) suffice.
//! - Notifications are treated like requests (a `tools/call` without id is still an invocation);
//!   responses sent by the client (to sampling / elicitation requests) need only the route scopes.
//!
//! Scope names are interned at compile time into bit positions, so a request's granted scopes are
//! mapped once ([`Policy::grant_set`]) and every check is a mask comparison.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use std::fmt;

use globset::{Candidate, GlobBuilder, GlobMatcher};

use crate::jsonrpc::{Envelope, Message};

/// Distinct scopes one route's policy may mention (the width of [`ScopeSet`]).
pub const MAX_SCOPES: usize = 128;

/// Label of a decision that needed only the route scopes.
const ROUTE_RULE: &str = "route";

/// The policy part of one `[[routes]]` entry, as parsed by the config layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySpec {
    pub route_scopes: Vec<String>,
    pub tools: BTreeMap<String, Vec<String>>,
    pub methods: BTreeMap<String, Vec<String>>,
    pub resources: BTreeMap<String, Vec<String>>,
    pub prompts: BTreeMap<String, Vec<String>>,
}

/// Why a spec could not be compiled; each names the table and key.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("[routes.{table}] key {pattern:?}: invalid glob: {source}")]
    Glob {
        table: &'static str,
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("[routes.{table}] key {key:?}: invalid scope {scope:?} (RFC 6749 §3.3 scope-token)")]
    InvalidScope {
        table: &'static str,
        key: String,
        scope: String,
    },
    #[error("route policy names {count} distinct scopes; at most {MAX_SCOPES} are supported")]
    TooManyScopes { count: usize },
    /// Several of the above, so one `mcpgate check` run reports every problem.
    #[error("{}", join_errors(.0))]
    Many(Vec<PolicyError>),
}

fn join_errors(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A set of scopes as bits; meaningful only with the [`Policy`] that produced it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u128);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);

    pub fn contains_all(self, other: ScopeSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }

    pub fn difference(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    fn with(self, bit: usize) -> ScopeSet {
        debug_assert!(bit < MAX_SCOPES);
        ScopeSet(self.0 | (1u128 << bit))
    }

    /// Bit positions, lowest first (= interning order, so output order is deterministic).
    fn bits(self) -> impl Iterator<Item = usize> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(bit)
        })
    }
}

/// Which list result is being filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    /// `tools/list`, `prompts/list`, `resources/list`.
    pub fn from_method(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            _ => None,
        }
    }

    /// The member of `result` that holds the items.
    pub fn result_field(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
        }
    }

    /// The member of each item that rules match on.
    pub fn item_key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
        }
    }

    /// The method that uses an item: an item is visible iff that call would be authorized.
    fn use_method(self) -> &'static str {
        match self {
            ListKind::Tools => "tools/call",
            ListKind::Prompts => "prompts/get",
            ListKind::Resources => "resources/read",
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A rule matched but the token lacks some of its scopes (HTTP 403 `insufficient_scope`).
    MissingScope,
    /// The table for this target is non-empty and none of its keys matches.
    NoRule,
}

impl DenyReason {
    /// Stable value for metrics labels and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::MissingScope => "missing_scope",
            DenyReason::NoRule => "no_rule",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Evidence that a message passed authorization, and which rule admitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'p> {
    rule: &'p Arc<str>,
    needed: ScopeSet,
}

impl<'p> Decision<'p> {
    /// The rule that decided, for audit: `route`, `method:tools/list`, `tool:delete_*`,
    /// `resource:file:///public/*`, `prompt:*`.
    pub fn rule(&self) -> &'p Arc<str> {
        self.rule
    }

    pub fn needed(&self) -> ScopeSet {
        self.needed
    }
}

/// A refusal, with everything a 403 challenge and an audit record need.
#[derive(Clone, Copy)]
pub struct Denied<'p> {
    policy: &'p Policy,
    reason: DenyReason,
    rule: &'p Arc<str>,
    needed: ScopeSet,
    granted: ScopeSet,
}

impl<'p> Denied<'p> {
    pub fn reason(&self) -> DenyReason {
        self.reason
    }

    /// The rule that refused (`tool:<unlisted>` for [`DenyReason::NoRule`]).
    pub fn rule(&self) -> &'p Arc<str> {
        self.rule
    }

    /// Every scope the call needs (route scopes, method scopes, the matched rule's scopes) in interning
    /// order, for the `scope` parameter of `WWW-Authenticate` (RFC 6750 §3, space-joined). For
    /// `no_rule` no scope would help; this is then the route and method scopes only.
    pub fn required(&self) -> impl Iterator<Item = &'p str> + 'p {
        self.policy.names(self.needed)
    }

    /// The set behind [`Denied::required`].
    pub fn needed(&self) -> ScopeSet {
        self.needed
    }

    /// The needed scopes the token lacks (for logs).
    pub fn missing(&self) -> impl Iterator<Item = &'p str> + 'p {
        self.policy.names(self.needed.difference(self.granted))
    }
}

impl fmt::Debug for Denied<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Denied")
            .field("reason", &self.reason)
            .field("rule", &self.rule)
            .field("required", &self.required().collect::<Vec<_>>())
            .field("missing", &self.missing().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Display for Denied<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "denied by {} ({})", self.rule, self.reason)
    }
}

impl std::error::Error for Denied<'_> {}

#[derive(Debug)]
struct Rule {
    /// `tool:<pattern>` etc., built once so decisions borrow it.
    label: Arc<str>,
    scopes: ScopeSet,
}

/// One of tools / prompts / resources.
#[derive(Debug)]
struct Table {
    exact: HashMap<Box<str>, Rule>,
    /// In precedence order: longer pattern first.
    globs: Vec<(GlobMatcher, Rule)>,
    /// Label of a `no_rule` refusal.
    unlisted: Arc<str>,
}

impl Table {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    fn lookup(&self, name: &str) -> Option<&Rule> {
        if let Some(rule) = self.exact.get(name) {
            return Some(rule);
        }
        // Candidate::from_bytes borrows the name: no path normalisation, no allocation.
        let candidate = Candidate::from_bytes(name.as_bytes());
        self.globs
            .iter()
            .find(|(glob, _)| glob.is_match_candidate(&candidate))
            .map(|(_, rule)| rule)
    }
}

/// A route's compiled policy. Cheap to query from many threads (`&self` only).
#[derive(Debug)]
pub struct Policy {
    /// Interned scope names; index = bit in [`ScopeSet`]. Shared, like rule labels, with the
    /// audit events that name them.
    names: Vec<Arc<str>>,
    /// Label of a decision that needed only the route scopes.
    route_rule: Arc<str>,
    index: HashMap<Box<str>, usize>,
    route: ScopeSet,
    methods: HashMap<Box<str>, Rule>,
    tools: Table,
    prompts: Table,
    resources: Table,
}

/// Compiles a route's policy; every problem in the spec is reported (see [`PolicyError::Many`]).
pub fn compile(spec: &PolicySpec) -> Result<Policy, PolicyError> {
    let mut b = Builder::default();
    // Route scopes are interned first so they lead `scopes_supported` and `required()`.
    let route = b.scopes("scopes", "", &spec.route_scopes);
    let tools = b.table("tools", "tool", &spec.tools);
    let methods = spec
        .methods
        .iter()
        .map(|(method, scopes)| {
            let rule = Rule {
                label: format!("method:{method}").into(),
                scopes: b.scopes("methods", method, scopes),
            };
            (Box::from(method.as_str()), rule)
        })
        .collect();
    let resources = b.table("resources", "resource", &spec.resources);
    let prompts = b.table("prompts", "prompt", &spec.prompts);
    if b.names.len() > MAX_SCOPES {
        b.errors.push(PolicyError::TooManyScopes {
            count: b.names.len(),
        });
    }
    match b.errors.len() {
        0 => Ok(Policy {
            names: b.names.into_iter().map(Arc::from).collect(),
            route_rule: Arc::from(ROUTE_RULE),
            index: b.index,
            route,
            methods,
            tools,
            prompts,
            resources,
        }),
        1 => Err(b.errors.pop().expect("one error")),
        _ => Err(PolicyError::Many(b.errors)),
    }
}

#[derive(Default)]
struct Builder {
    names: Vec<Box<str>>,
    index: HashMap<Box<str>, usize>,
    errors: Vec<PolicyError>,
}

impl Builder {
    fn scopes(&mut self, table: &'static str, key: &str, scopes: &[String]) -> ScopeSet {
        let mut set = ScopeSet::EMPTY;
        for scope in scopes {
            if !is_scope_token(scope) {
                self.errors.push(PolicyError::InvalidScope {
                    table,
                    key: key.to_owned(),
                    scope: scope.clone(),
                });
                continue;
            }
            let bit = match self.index.get(scope.as_str()) {
                Some(&bit) => bit,
                None => {
                    let bit = self.names.len();
                    self.names.push(scope.as_str().into());
                    self.index.insert(scope.as_str().into(), bit);
                    bit
                }
            };
            // Past the limit the spec is rejected anyway (TooManyScopes); keep counting.
            if bit < MAX_SCOPES {
                set = set.with(bit);
            }
        }
        set
    }

    fn table(
        &mut self,
        table: &'static str,
        kind: &str,
        spec: &BTreeMap<String, Vec<String>>,
    ) -> Table {
        let mut exact = HashMap::new();
        let mut globs = Vec::new();
        for (pattern, scopes) in spec {
            let rule = Rule {
                label: format!("{kind}:{pattern}").into(),
                scopes: self.scopes(table, pattern, scopes),
            };
            if !is_glob(pattern) {
                exact.insert(Box::from(pattern.as_str()), rule);
                continue;
            }
            // literal_separator(false): `*` crosses `/`, so `file:///public/*` covers nested URIs.
            // backslash_escape(true) on every platform so `\*` means a literal star everywhere.
            match GlobBuilder::new(pattern)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
            {
                Ok(glob) => globs.push((glob.compile_matcher(), rule)),
                Err(source) => self.errors.push(PolicyError::Glob {
                    table,
                    pattern: pattern.clone(),
                    source,
                }),
            }
        }
        // Stable sort keeps BTreeMap (lexicographic) order among equal lengths.
        globs.sort_by_key(|(g, _): &(GlobMatcher, Rule)| std::cmp::Reverse(g.glob().glob().len()));
        Table {
            exact,
            globs,
            unlisted: format!("{kind}:<unlisted>").into(),
        }
    }
}

/// Keys with none of globset's metacharacters are exact names, looked up by hash.
fn is_glob(pattern: &str) -> bool {
    pattern
        .bytes()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b']' | b'{' | b'}' | b'\\'))
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`. Also what keeps scopes safe to
/// echo inside a quoted `WWW-Authenticate` parameter.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl Policy {
    /// Maps a token's scopes to a set once per request; scopes this policy never mentions are ignored.
    pub fn grant_set(&self, granted: &[impl AsRef<str>]) -> ScopeSet {
        granted
            .iter()
            .filter_map(|s| self.index.get(s.as_ref()))
            .fold(ScopeSet::EMPTY, |set, &bit| set.with(bit))
    }

    /// As [`Policy::grant_set`] for a space-separated `scope` claim (RFC 8693 §4.2 / RFC 7662 §2.2).
    pub fn grant_set_str(&self, scope_claim: &str) -> ScopeSet {
        scope_claim
            .split(' ')
            .filter_map(|s| self.index.get(s))
            .fold(ScopeSet::EMPTY, |set, &bit| set.with(bit))
    }

    /// The route scopes alone (what responses and most notifications need).
    pub fn route_scopes(&self) -> ScopeSet {
        self.route
    }

    /// Decides one message. Allocation-free.
    pub fn authorize(
        &self,
        msg: &Message<'_>,
        granted: ScopeSet,
    ) -> Result<Decision<'_>, Denied<'_>> {
        match msg.method() {
            Some(method) => {
                self.authorize_call(method, msg.name.as_deref(), msg.uri.as_deref(), granted)
            }
            None => self.check(&self.route_rule, self.route, granted),
        }
    }

    /// Decides every message of a body; one refusal refuses the whole batch (checklist §2.3: never
    /// authorize only `body[0]`). The error carries the index of the first refused message.
    pub fn authorize_all(
        &self,
        env: &Envelope<'_>,
        granted: ScopeSet,
    ) -> Result<Vec<Decision<'_>>, (usize, Denied<'_>)> {
        env.messages()
            .enumerate()
            .map(|(i, m)| self.authorize(m, granted).map_err(|d| (i, d)))
            .collect()
    }

    /// Whether a listed item should be shown: exactly when calling / reading it would be authorized.
    pub fn visible(&self, kind: ListKind, name_or_uri: &str, granted: ScopeSet) -> bool {
        let (name, uri) = match kind {
            ListKind::Tools | ListKind::Prompts => (Some(name_or_uri), None),
            ListKind::Resources => (None, Some(name_or_uri)),
        };
        self.authorize_call(kind.use_method(), name, uri, granted)
            .is_ok()
    }

    /// False when every item of this kind is visible to anyone who passed the route scopes, so the
    /// proxy can skip parsing list responses altogether.
    pub fn needs_filtering(&self, kind: ListKind) -> bool {
        !self.table(kind).is_empty() || self.methods.contains_key(kind.use_method())
    }

    /// RFC 9728 `scopes_supported`: route scopes first, then rule scopes, deduplicated, stable order.
    pub fn scopes_supported(&self) -> Vec<String> {
        self.names.iter().map(|s| s.to_string()).collect()
    }

    /// The tool name as a metrics label: configured exact names pass through, anything else is
    /// `other`, so label cardinality is bounded by the config, not by clients.
    pub fn tool_label<'s>(&'s self, name: &str) -> &'s str {
        self.tools
            .exact
            .get_key_value(name)
            .map_or("other", |(k, _)| k)
    }

    /// Every tool label besides `other`: the configured exact tool names.
    pub fn tool_labels(&self) -> impl Iterator<Item = &str> {
        self.tools.exact.keys().map(|k| &**k)
    }

    fn table(&self, kind: ListKind) -> &Table {
        match kind {
            ListKind::Tools => &self.tools,
            ListKind::Prompts => &self.prompts,
            ListKind::Resources => &self.resources,
        }
    }

    fn authorize_call(
        &self,
        method: &str,
        name: Option<&str>,
        uri: Option<&str>,
        granted: ScopeSet,
    ) -> Result<Decision<'_>, Denied<'_>> {
        let mut needed = self.route;
        let mut rule = &self.route_rule;
        if let Some(m) = self.methods.get(method) {
            needed = needed.union(m.scopes);
            rule = &m.label;
        }
        let target = match method {
            "tools/call" => Some((&self.tools, name)),
            "prompts/get" => Some((&self.prompts, name)),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                Some((&self.resources, uri))
            }
            _ => None,
        };
        if let Some((table, target)) = target
            && !table.is_empty()
        {
            match target.and_then(|t| table.lookup(t)) {
                Some(r) => {
                    needed = needed.union(r.scopes);
                    rule = &r.label;
                }
                None => {
                    return Err(Denied {
                        policy: self,
                        reason: DenyReason::NoRule,
                        rule: &table.unlisted,
                        needed,
                        granted,
                    });
                }
            }
        }
        self.check(rule, needed, granted)
    }

    fn check<'p>(
        &'p self,
        rule: &'p Arc<str>,
        needed: ScopeSet,
        granted: ScopeSet,
    ) -> Result<Decision<'p>, Denied<'p>> {
        if granted.contains_all(needed) {
            Ok(Decision { rule, needed })
        } else {
            Err(Denied {
                policy: self,
                reason: DenyReason::MissingScope,
                rule,
                needed,
                granted,
            })
        }
    }

    pub fn names(&self, set: ScopeSet) -> impl Iterator<Item = &str> + '_ {
        set.bits().map(|bit| &*self.names[bit])
    }

    /// As [`Policy::names`], shared rather than borrowed (for audit events).
    pub fn shared_names(&self, set: ScopeSet) -> impl Iterator<Item = Arc<str>> + '_ {
        set.bits().map(|bit| self.names[bit].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{Limits, classify};

    fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    /// The example route of CONFIG-SCHEMA.md, plus a few rules to exercise precedence.
    fn calendar() -> Policy {
        compile(&PolicySpec {
            route_scopes: vec!["mcp:tools".into()],
            tools: map(&[
                ("get_events", &["calendar:read"]),
                ("delete_*", &["calendar:admin"]),
                ("delete_all*", &["calendar:admin", "calendar:danger"]),
                ("delete_event", &["calendar:write"]),
            ]),
            methods: map(&[("tools/list", &[]), ("resources/read", &["files:any"])]),
            resources: map(&[("file:///public/*", &["files:read"])]),
            prompts: BTreeMap::new(),
        })
        .unwrap()
    }

    fn call(p: &Policy, body: &str, scopes: &[&str]) -> Result<String, (DenyReason, String)> {
        let env = classify(body.as_bytes(), &Limits::default(), false).unwrap();
        let m = env.single().unwrap();
        let granted = p.grant_set(scopes);
        p.authorize(m, granted)
            .map(|d| d.rule().to_string())
            .map_err(|d| (d.reason(), d.required().collect::<Vec<_>>().join(" ")))
    }

    fn tool(name: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}"}}}}"#)
    }

    #[test]
    fn policy_matrix() {
        let p = calendar();
        let ok = |r: &str| Ok(r.to_owned());
        let missing = |s: &str| Err((DenyReason::MissingScope, s.to_owned()));
        assert_eq!(
            call(&p, &tool("get_events"), &["mcp:tools", "calendar:read"]),
            ok("tool:get_events")
        );
        assert_eq!(
            call(&p, &tool("get_events"), &["calendar:read"]),
            missing("mcp:tools calendar:read")
        );
        assert_eq!(
            call(&p, &tool("get_events"), &["mcp:tools"]),
            missing("mcp:tools calendar:read")
        );
        // No "*" key: unlisted tools are denied whatever the token holds.
        assert_eq!(
            call(
                &p,
                &tool("other"),
                &["mcp:tools", "calendar:read", "calendar:admin"]
            ),
            Err((DenyReason::NoRule, "mcp:tools".into()))
        );
        // Methods table: an empty list adds nothing; unlisted methods add nothing.
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(call(&p, list, &["mcp:tools"]), ok("method:tools/list"));
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        assert_eq!(call(&p, ping, &["mcp:tools"]), ok("route"));
        assert_eq!(call(&p, ping, &[]), missing("mcp:tools"));
        // Responses and notifications need the route scopes.
        let resp = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(call(&p, resp, &["mcp:tools"]), ok("route"));
        assert_eq!(call(&p, resp, &[]), missing("mcp:tools"));
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        assert_eq!(call(&p, note, &["mcp:tools"]), ok("route"));
        // ...but a tools/call notification is still a tool call.
        let tool_note = r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_x"}}"#;
        assert_eq!(
            call(&p, tool_note, &["mcp:tools"]),
            missing("mcp:tools calendar:admin")
        );
    }

    #[test]
    fn glob_precedence_exact_then_longer_then_shorter() {
        let p = calendar();
        let all = [
            "mcp:tools",
            "calendar:read",
            "calendar:write",
            "calendar:admin",
            "calendar:danger",
        ];
        assert_eq!(
            call(&p, &tool("delete_event"), &all).unwrap(),
            "tool:delete_event"
        );
        assert_eq!(
            call(&p, &tool("delete_thing"), &all).unwrap(),
            "tool:delete_*"
        );
        assert_eq!(
            call(&p, &tool("delete_all_events"), &all).unwrap(),
            "tool:delete_all*"
        );
        // The exact rule alone decides: calendar:write suffices without calendar:admin.
        assert!(call(&p, &tool("delete_event"), &["mcp:tools", "calendar:write"]).is_ok());
        assert_eq!(
            call(
                &p,
                &tool("delete_all_events"),
                &["mcp:tools", "calendar:admin"]
            ),
            Err((
                DenyReason::MissingScope,
                "mcp:tools calendar:admin calendar:danger".into()
            ))
        );
    }

    #[test]
    fn escaped_name_resolves_before_matching() {
        let p = calendar();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0064elete_thing"}}"#;
        assert_eq!(
            call(&p, body, &["mcp:tools"]),
            Err((DenyReason::MissingScope, "mcp:tools calendar:admin".into()))
        );
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\u0064elete_event"}}"#;
        assert_eq!(
            call(&p, body, &["mcp:tools", "calendar:write"]).unwrap(),
            "tool:delete_event"
        );
    }

    #[test]
    fn catch_all_present() {
        let p = compile(&PolicySpec {
            route_scopes: vec!["mcp".into()],
            tools: map(&[("*", &["mcp:tools"]), ("admin_*", &["admin"])]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            call(&p, &tool("anything/at all"), &["mcp", "mcp:tools"]).unwrap(),
            "tool:*"
        );
        assert_eq!(
            call(&p, &tool("admin_x"), &["mcp", "admin"]).unwrap(),
            "tool:admin_*"
        );
        // The longer glob replaces the catch-all, it does not add to it.
        assert!(call(&p, &tool("admin_x"), &["mcp", "mcp:tools"]).is_err());
    }

    #[test]
    fn empty_tables_mean_route_scopes_only() {
        let p = compile(&PolicySpec {
            route_scopes: vec!["mcp".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(call(&p, &tool("anything"), &["mcp"]).unwrap(), "route");
        assert!(p.visible(ListKind::Tools, "anything", p.grant_set(&["mcp"])));
        assert!(!p.needs_filtering(ListKind::Tools));
        assert!(!p.needs_filtering(ListKind::Resources));
    }

    #[test]
    fn resources_and_prompts() {
        let p = compile(&PolicySpec {
            route_scopes: vec![],
            resources: map(&[("file:///public/*", &["files:read"]), ("db://*", &[])]),
            prompts: map(&[("summar?", &["p"])]),
            ..Default::default()
        })
        .unwrap();
        let read = |uri: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#
            )
        };
        assert_eq!(
            call(&p, &read("file:///public/a/b/c.txt"), &["files:read"]).unwrap(),
            "resource:file:///public/*"
        );
        assert!(call(&p, &read("file:///public/x"), &[]).is_err());
        assert_eq!(call(&p, &read("db://x"), &[]).unwrap(), "resource:db://*");
        assert_eq!(
            call(&p, &read("file:///private/x"), &["files:read"])
                .unwrap_err()
                .0,
            DenyReason::NoRule
        );
        let sub = r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///etc/passwd"}}"#;
        assert_eq!(
            call(&p, sub, &["files:read"]).unwrap_err().0,
            DenyReason::NoRule
        );
        let get = |n: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{{"name":"{n}"}}}}"#
            )
        };
        assert_eq!(call(&p, &get("summary"), &["p"]).unwrap(), "prompt:summar?");
        assert_eq!(
            call(&p, &get("summaries"), &["p"]).unwrap_err().0,
            DenyReason::NoRule
        );
        // Tools table is empty: tools need only the (empty) route scopes.
        assert!(call(&p, &tool("x"), &[]).is_ok());
    }

    #[test]
    fn names_match_byte_for_byte() {
        let p = compile(&PolicySpec {
            tools: map(&[("Get", &[]), ("café*", &[])]),
            ..Default::default()
        })
        .unwrap();
        assert!(call(&p, &tool("Get"), &[]).is_ok());
        assert!(call(&p, &tool("get"), &[]).is_err());
        assert!(call(&p, &tool("Get "), &[]).is_err());
        assert!(call(&p, &tool("café au lait"), &[]).is_ok());
        assert!(call(&p, &tool("cafe"), &[]).is_err());
    }

    #[test]
    fn batch_with_one_denied_element_is_denied() {
        let p = calendar();
        let body = format!("[{},{}]", tool("get_events"), tool("delete_x"));
        let env = classify(body.as_bytes(), &Limits::default(), true).unwrap();
        let g = p.grant_set(&["mcp:tools", "calendar:read"]);
        let (i, d) = p.authorize_all(&env, g).unwrap_err();
        assert_eq!(i, 1);
        assert_eq!(d.reason(), DenyReason::MissingScope);
        assert_eq!(d.missing().collect::<Vec<_>>(), ["calendar:admin"]);
        let g = p.grant_set(&["mcp:tools", "calendar:read", "calendar:admin"]);
        let ok = p.authorize_all(&env, g).unwrap();
        assert_eq!(
            ok.iter().map(|d| &**d.rule()).collect::<Vec<_>>(),
            ["tool:get_events", "tool:delete_*"]
        );
    }

    #[test]
    fn visible_follows_authorize() {
        let p = calendar();
        let g = p.grant_set(&["mcp:tools", "calendar:read"]);
        assert!(p.visible(ListKind::Tools, "get_events", g));
        assert!(!p.visible(ListKind::Tools, "delete_event", g));
        assert!(!p.visible(ListKind::Tools, "unlisted", g));
        // resources/read needs files:any from the methods table as well.
        assert!(!p.visible(
            ListKind::Resources,
            "file:///public/a",
            p.grant_set(&["mcp:tools", "files:read"])
        ));
        assert!(p.visible(
            ListKind::Resources,
            "file:///public/a",
            p.grant_set(&["mcp:tools", "files:read", "files:any"])
        ));
        assert!(p.needs_filtering(ListKind::Tools));
        assert!(!p.needs_filtering(ListKind::Prompts));
    }

    #[test]
    fn scopes_supported_and_labels() {
        let p = calendar();
        assert_eq!(
            p.scopes_supported(),
            // Tables in BTreeMap order: delete_*, delete_all*, delete_event, get_events; then methods, resources.
            [
                "mcp:tools",
                "calendar:admin",
                "calendar:danger",
                "calendar:write",
                "calendar:read",
                "files:any",
                "files:read"
            ]
        );
        assert_eq!(p.tool_label("get_events"), "get_events");
        assert_eq!(p.tool_label("delete_zzz"), "other");
        assert_eq!(p.grant_set(&["unknown", "mcp:tools"]), p.route_scopes());
        assert_eq!(p.grant_set_str("unknown mcp:tools  calendar:read").len(), 2);
    }

    #[test]
    fn compile_errors_name_table_and_key() {
        let err = compile(&PolicySpec {
            tools: map(&[("a[", &[])]),
            resources: map(&[("ok", &["bad scope"])]),
            ..Default::default()
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, PolicyError::Many(ref v) if v.len() == 2),
            "{text}"
        );
        assert!(
            text.contains("[routes.tools] key \"a[\": invalid glob"),
            "{text}"
        );
        assert!(
            text.contains("[routes.resources] key \"ok\": invalid scope \"bad scope\""),
            "{text}"
        );
        let many: Vec<String> = (0..129).map(|i| format!("s{i}")).collect();
        let err = compile(&PolicySpec {
            route_scopes: many,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, PolicyError::TooManyScopes { count: 129 }));
        let exactly: Vec<String> = (0..128).map(|i| format!("s{i}")).collect();
        let p = compile(&PolicySpec {
            route_scopes: exactly.clone(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.grant_set(&exactly).len(), 128);
        assert!(
            p.check(&p.route_rule, p.route, p.grant_set(&exactly))
                .is_ok()
        );
    }
}
