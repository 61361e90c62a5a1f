//! The schema check: the YAML document to a [`ServerConfig`], reporting every problem with its
//! position rather than stopping at the first.
use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};
use std::path::Path;

use airlock_policy::values::check_name;
use airlock_policy::walk::{Fields, KeyHint, Text, WalkError, Walker, closest, join};
use airlock_policy::yaml::{Kind, Node, Pos, parse_documents};
use airlock_policy::{Diagnostic, Diagnostics, Location};

use super::model::{
    Channel, Escalation, Match, OPERATIONS, Principal, Route, ServerConfig, Webhook,
};
use super::problem::ConfigProblem;
use super::values::{self, DELAY, GROUP_NAME, GlobUse, PRINCIPAL_NAME, ROUTE_NAME};

const TOP_KEYS: &[&str] = &[
    "listen",
    "http_listen",
    "metrics_listen",
    "database",
    "break_glass",
    "principals",
    "routes",
    "webhook",
    "web",
    "teams",
    "slack",
    "audit",
];
const WEBHOOK_KEYS: &[&str] = &["url", "secret_file"];
const PRINCIPAL_KEYS: &[&str] = &["groups", "host_users"];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "approvers",
    "threshold",
    "deny_requires_reason",
    "reminder",
    "escalation",
    "channels",
    "web_only",
];
const MATCH_KEYS: &[&str] = &[
    "hosts",
    "labels",
    "agents",
    "rules",
    "operations",
    "paths",
    "binaries",
];
const ESCALATION_KEYS: &[&str] = &["after", "to"];

/// The operation names, for messages and suggestions ([`OPERATIONS`]' names).
pub(crate) const OP_NAMES: [&str; OPERATIONS.len()] = {
    let mut names = [""; OPERATIONS.len()];
    let mut i = 0;
    while i < OPERATIONS.len() {
        names[i] = OPERATIONS[i].0;
        i += 1;
    }
    names
};

/// The channel names, for messages and suggestions.
pub(crate) const CHANNEL_NAMES: [&str; 5] = {
    let mut names = [""; 5];
    let mut i = 0;
    while i < Channel::ALL.len() {
        names[i] = Channel::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Hint for lists where leaving the key out means "any".
const MATCH_HINT: &str = " (leave the key out to match any)";

/// Principals in each group, as the routes see them.
type Members = BTreeMap<String, BTreeSet<String>>;

/// Parses and checks one config file's text; `file` only names it in messages.
pub(crate) fn config(src: &str, file: &Path) -> Result<ServerConfig, Diagnostics> {
    let mut diags = Diagnostics::default();
    let docs = match parse_documents(src, "the server config") {
        Ok(docs) => docs,
        Err(errors) => {
            for e in errors {
                diags.push(e.diagnostic(file));
            }
            return Err(diags);
        }
    };
    let Some(doc) = docs.first() else {
        let whole = Location::whole_file(file);
        diags.push(Diagnostic::new(whole, "", ConfigProblem::NoDocument));
        return Err(diags);
    };
    let mut r = Reader(Walker::new(file, &mut diags).with_key_hint(KeyHint::DidYouMean));
    if let Some(second) = docs.get(1) {
        r.err(second.pos, "", ConfigProblem::ManyDocuments);
    }
    match r.top(doc) {
        Some(cfg) if diags.is_empty() => Ok(cfg),
        _ => {
            diags.sort();
            Err(diags)
        }
    }
}

/// Reads the config: the policy crate's [`Walker`] (types, keys, strings, lists, durations,
/// reported as in policies but with "did you mean" for unknown keys) and the server's own
/// parts on top.
pub(super) struct Reader<'a>(Walker<'a>);

impl<'a> Deref for Reader<'a> {
    type Target = Walker<'a>;

    fn deref(&self) -> &Walker<'a> {
        &self.0
    }
}

impl DerefMut for Reader<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Reader<'_> {
    fn top(&mut self, doc: &Node) -> Option<ServerConfig> {
        let top = self.mapping(doc, "", TOP_KEYS)?;
        let mut cfg = ServerConfig {
            listen: None,
            http_listen: None,
            metrics_listen: None,
            database: None,
            break_glass: true,
            principals: BTreeMap::new(),
            routes: Vec::new(),
            webhook: None,
            web: None,
            teams: None,
            slack: None,
            audit: Default::default(),
            notes: Vec::new(),
        };
        if let Some(t) = top.get("listen").and_then(|n| self.string(n, "listen")) {
            if t.text.parse::<std::net::SocketAddr>().is_ok() {
                cfg.listen = Some(t.text);
            } else {
                self.err(t.pos, "listen", ConfigProblem::BadListen { found: t.text });
            }
        }
        if let Some(t) = top
            .get("http_listen")
            .and_then(|n| self.string(n, "http_listen"))
        {
            if t.text.parse::<std::net::SocketAddr>().is_ok() {
                cfg.http_listen = Some(t.text);
            } else {
                self.err(
                    t.pos,
                    "http_listen",
                    ConfigProblem::BadListen { found: t.text },
                );
            }
        }
        if let Some(t) = top
            .get("metrics_listen")
            .and_then(|n| self.string(n, "metrics_listen"))
        {
            if t.text.parse::<std::net::SocketAddr>().is_ok() {
                cfg.metrics_listen = Some(t.text);
            } else {
                let found = t.text;
                self.err(t.pos, "metrics_listen", ConfigProblem::BadListen { found });
            }
        }
        if let Some(t) = top.get("database").and_then(|n| self.string(n, "database")) {
            // The store opens these two kinds only; saying so here beats failing at start.
            let known = ["postgres://", "postgresql://", "sqlite:"];
            if known.iter().any(|p| t.text.starts_with(p)) {
                cfg.database = Some(t.text);
            } else {
                self.err(t.pos, "database", ConfigProblem::BadDatabase);
            }
        }
        if let Some(b) = top
            .get("break_glass")
            .and_then(|n| self.bool(n, "break_glass"))
        {
            cfg.break_glass = b;
        }
        if let Some(node) = top.get("principals") {
            cfg.principals = self.principals(node);
        }
        let mut members = Members::new();
        for (name, p) in &cfg.principals {
            for g in &p.groups {
                members.entry(g.clone()).or_default().insert(name.clone());
            }
        }
        if let Some(node) = top.get("webhook") {
            cfg.webhook = self.webhook(node);
        }
        if let Some(node) = top.get("web") {
            cfg.web = self.web(node, cfg.http_listen.is_some());
        }
        if let Some(node) = top.get("teams") {
            cfg.teams = self.teams(node);
        }
        if let Some(node) = top.get("slack") {
            cfg.slack = self.slack(node, &cfg);
        }
        if let Some(node) = top.get("audit") {
            cfg.audit = self.audit(node);
        }
        if let Some(node) = top.get("routes") {
            cfg.routes = self.routes(node, &members);
            // A `slack:` with errors is reported already.
            if top.get("slack").is_none() {
                self.channel_needs_section(node, Channel::Slack, "slack");
            }
            if cfg.web.is_none() {
                self.web_only_needs_web(node);
            }
            if cfg.web.is_none() {
                self.channel_needs_section(node, Channel::Web, "web");
            }
            if cfg.webhook.is_none() {
                self.channel_needs_section(node, Channel::Webhook, "webhook");
            }
            if cfg.teams.is_none() {
                self.channel_needs_section(node, Channel::Teams, "teams");
            }
            // Teams webhook cards cannot deliver clicks: their button opens the web page.
            if cfg.web.is_none() {
                self.channel_needs_section(node, Channel::Teams, "web");
            }
        }
        cfg.notes = self.notes(&top, &cfg.routes);
        Some(cfg)
    }

    fn webhook(&mut self, node: &Node) -> Option<Webhook> {
        let f = self.mapping(node, "webhook", WEBHOOK_KEYS)?;
        let url = self.required_string(&f, "webhook", "url");
        let secret = self.required_string(&f, "webhook", "secret_file");
        let url = match url {
            Some(t) if t.text.starts_with("http://") || t.text.starts_with("https://") => t.text,
            Some(t) => {
                self.err(
                    t.pos,
                    "webhook.url",
                    ConfigProblem::BadWebhookUrl { found: t.text },
                );
                return None;
            }
            None => return None,
        };
        Some(Webhook {
            url,
            secret_file: std::path::PathBuf::from(secret?.text),
        })
    }

    /// Reports each `channels:` entry naming `channel` when its section is missing.
    pub(super) fn channel_needs_section(
        &mut self,
        routes: &Node,
        channel: Channel,
        section: &'static str,
    ) {
        let Kind::Seq(items) = &routes.kind else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let Kind::Map(entries) = &item.kind else {
                continue;
            };
            for (k, v) in entries {
                if !matches!(&k.kind, Kind::Scalar { value, .. } if value == "channels") {
                    continue;
                }
                let Kind::Seq(names) = &v.kind else { continue };
                for (j, n) in names.iter().enumerate() {
                    if matches!(&n.kind, Kind::Scalar { value, .. } if value == channel.as_str()) {
                        self.err(
                            n.pos,
                            &format!("routes[{i}].channels[{j}]"),
                            ConfigProblem::ChannelNotConfigured {
                                channel: channel.as_str(),
                                section,
                            },
                        );
                    }
                }
            }
        }
    }

    fn principals(&mut self, node: &Node) -> BTreeMap<String, Principal> {
        let mut out = BTreeMap::new();
        for (name, value) in self.entries(node, "principals").unwrap_or_default() {
            let field = join("principals", &name.text);
            if let Err(e) = check_name(&name.text, &PRINCIPAL_NAME) {
                self.err(name.pos, "principals", e);
            }
            let Some(f) = self.mapping(value, &field, PRINCIPAL_KEYS) else {
                continue;
            };
            let mut p = Principal::default();
            if let Some(n) = f.get("groups") {
                let hint = " (leave it out for a principal in no group)";
                for (t, item_field) in self.string_list(n, &join(&field, "groups"), hint) {
                    match check_name(&t.text, &GROUP_NAME) {
                        Ok(()) => p.groups.push(t.text),
                        Err(e) => self.err(t.pos, &item_field, e),
                    }
                }
            }
            if let Some(n) = f.get("host_users") {
                for (t, item_field) in self.string_list(n, &join(&field, "host_users"), "") {
                    match values::host_user(&t.text) {
                        Ok(u) => p.host_users.push(u),
                        Err(e) => self.err(t.pos, &item_field, e),
                    }
                }
            }
            out.insert(name.text, p);
        }
        out
    }

    fn routes(&mut self, node: &Node, members: &Members) -> Vec<Route> {
        let Some(items) = self.seq(node, "routes") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("routes[{i}]");
            let Some((route, name)) = self.route(item, &field, members) else {
                continue;
            };
            if let Some(name) = name {
                if let Some(&first_line) = names.get(&name.text) {
                    let e = ConfigProblem::DuplicateRoute {
                        name: name.text,
                        first_line,
                    };
                    self.err(name.pos, &join(&field, "name"), e);
                } else {
                    names.insert(name.text, name.pos.line);
                }
            }
            out.push(route);
        }
        out
    }

    /// The route, and its name where it has a valid one (for duplicate-name reports).
    fn route(
        &mut self,
        node: &Node,
        field: &str,
        members: &Members,
    ) -> Option<(Route, Option<Text>)> {
        let f = self.mapping(node, field, ROUTE_KEYS)?;
        let mut route = Route {
            name: String::new(),
            matching: Match::default(),
            approvers: Vec::new(),
            threshold: 1,
            deny_requires_reason: false,
            reminder: None,
            escalation: None,
            channels: vec![Channel::Cli],
            web_only: false,
        };
        let mut name = None;
        if let Some(t) = self.required_string(&f, field, "name") {
            match check_name(&t.text, &ROUTE_NAME) {
                Ok(()) => {
                    route.name = t.text.clone();
                    name = Some(t);
                }
                Err(e) => self.err(t.pos, &join(field, "name"), e),
            }
        }
        if let Some(n) = f.get("match") {
            route.matching = self.matching(n, &join(field, "match"));
        }
        let mut approvers_known = false;
        if let Some(n) = self.required(&f, field, "approvers") {
            let (groups, known) = self.groups(n, &join(field, "approvers"), members);
            route.approvers = groups;
            approvers_known = known;
        }
        if let Some(n) = f.get("threshold") {
            let t_field = join(field, "threshold");
            if let Some(t) = self.string(n, &t_field) {
                match t.text.parse::<u32>() {
                    Err(_) => {
                        let e = ConfigProblem::BadThreshold { found: t.text };
                        self.err(t.pos, &t_field, e);
                    }
                    Ok(0) => self.err(t.pos, &t_field, ConfigProblem::ThresholdZero),
                    Ok(threshold) => {
                        route.threshold = threshold;
                        // With an unknown group M is unknowable; that group is reported already.
                        if approvers_known {
                            self.check_threshold(&route, t.pos, &t_field, members);
                        }
                    }
                }
            }
        }
        if let Some(n) = f.get("deny_requires_reason") {
            let b_field = join(field, "deny_requires_reason");
            route.deny_requires_reason = self.bool(n, &b_field).unwrap_or(false);
        }
        if let Some(n) = f.get("reminder") {
            route.reminder = self.duration(n, &join(field, "reminder"), &DELAY);
        }
        if let Some(n) = f.get("escalation") {
            route.escalation = self.escalation(n, &join(field, "escalation"), members);
        }
        if let Some(n) = f.get("web_only") {
            route.web_only = self.bool(n, &join(field, "web_only")).unwrap_or(false);
        }
        if let Some(n) = f.get("channels") {
            let c_field = join(field, "channels");
            let hint = " (leave it out for [cli])";
            route.channels.clear();
            for (t, item_field) in self.string_list(n, &c_field, hint) {
                match Channel::parse(&t.text) {
                    Some(c) => route.channels.push(c),
                    None => {
                        let e = ConfigProblem::UnknownChannel {
                            suggestion: closest(&t.text, CHANNEL_NAMES),
                            found: t.text,
                        };
                        self.err(t.pos, &item_field, e);
                    }
                }
            }
            // Teams cards and web-only Slack messages send people to the page to decide; a
            // route that does not take votes from the page would refuse every one of them.
            let links_to_page = route.channels.contains(&Channel::Teams)
                || (route.web_only && route.channels.contains(&Channel::Slack));
            if links_to_page && !route.channels.contains(&Channel::Web) {
                let via = if route.channels.contains(&Channel::Teams) {
                    "teams"
                } else {
                    "slack (web_only)"
                };
                self.err(n.pos, &c_field, ConfigProblem::PageNotOnRoute { via });
            }
        }
        Some((route, name))
    }

    /// N of M: more approvals than approvers would leave every request to time out.
    fn check_threshold(&mut self, route: &Route, pos: Pos, field: &str, members: &Members) {
        let m: BTreeSet<&String> = route
            .approvers
            .iter()
            .filter_map(|g| members.get(g))
            .flatten()
            .collect();
        if route.threshold as usize > m.len() {
            let e = ConfigProblem::ThresholdTooHigh {
                threshold: route.threshold,
                members: m.len(),
                groups: route.approvers.join(", "),
            };
            self.err(pos, field, e);
        }
    }

    /// Group names referenced by a route; the bool is true when every entry was a known group.
    fn groups(&mut self, node: &Node, field: &str, members: &Members) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        let mut all_known = true;
        let items = self.string_list(node, field, "");
        if items.is_empty() {
            all_known = false;
        }
        for (t, item_field) in items {
            if let Err(e) = check_name(&t.text, &GROUP_NAME) {
                self.err(t.pos, &item_field, e);
                all_known = false;
            } else if members.contains_key(&t.text) {
                out.push(t.text);
            } else {
                let e = ConfigProblem::UnknownGroup {
                    suggestion: closest(&t.text, members.keys().map(String::as_str))
                        .map(str::to_owned),
                    group: t.text,
                };
                self.err(t.pos, &item_field, e);
                all_known = false;
            }
        }
        (out, all_known)
    }

    fn escalation(&mut self, node: &Node, field: &str, members: &Members) -> Option<Escalation> {
        let f = self.mapping(node, field, ESCALATION_KEYS)?;
        let after = self
            .required(&f, field, "after")
            .and_then(|n| self.duration(n, &join(field, "after"), &DELAY));
        let to = self
            .required(&f, field, "to")
            .map(|n| self.groups(n, &join(field, "to"), members).0);
        Some(Escalation {
            after: after?,
            to: to?,
        })
    }

    fn matching(&mut self, node: &Node, field: &str) -> Match {
        let mut m = Match::default();
        let Some(f) = self.mapping(node, field, MATCH_KEYS) else {
            return m;
        };
        for (key, usage, out) in [
            ("hosts", GlobUse::Host, &mut m.hosts),
            ("agents", GlobUse::Name, &mut m.agents),
            ("rules", GlobUse::Name, &mut m.rules),
            ("paths", GlobUse::Path, &mut m.paths),
            ("binaries", GlobUse::Path, &mut m.binaries),
        ] {
            let Some(n) = f.get(key) else { continue };
            for (t, item_field) in self.string_list(n, &join(field, key), MATCH_HINT) {
                match values::glob(&t.text, usage) {
                    Ok(g) => out.push(g),
                    Err(e) => self.err(t.pos, &item_field, e),
                }
            }
        }
        if let Some(n) = f.get("labels") {
            m.labels = self.labels(n, &join(field, "labels"));
        }
        if let Some(n) = f.get("operations") {
            for (t, item_field) in self.string_list(n, &join(field, "operations"), MATCH_HINT) {
                match OPERATIONS.iter().find(|(name, _)| *name == t.text) {
                    Some((_, op)) => m.operations.push(*op),
                    None => {
                        // Policies say `write`; the server uses the wire name.
                        let suggestion = if t.text == "write" {
                            Some("open_write")
                        } else {
                            closest(&t.text, OP_NAMES)
                        };
                        let e = ConfigProblem::UnknownOperation {
                            found: t.text,
                            suggestion,
                        };
                        self.err(t.pos, &item_field, e);
                    }
                }
            }
        }
        m
    }

    fn labels(&mut self, node: &Node, field: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(entries) = self.entries(node, field) else {
            return out;
        };
        if entries.is_empty() {
            let e = WalkError::EmptyList { hint: MATCH_HINT };
            self.err(node.pos, field, e);
        }
        for (key, value) in entries {
            let key_field = join(field, &key.text);
            if let Some(v) = self.string(value, &key_field) {
                out.insert(key.text, v.text);
            }
        }
        out
    }

    /// Warnings: no catch-all route, and routes a catch-all above them hides.
    fn notes(&self, top: &Fields<'_>, routes: &[Route]) -> Vec<String> {
        let mut notes = Vec::new();
        let routes_node = top.get("routes");
        let route_nodes: &[Node] = match routes_node.map(|n| &n.kind) {
            Some(Kind::Seq(items)) => items,
            _ => &[],
        };
        match routes.iter().position(|r| r.matching.is_catch_all()) {
            None => {
                let loc = match top.key_pos("routes") {
                    Some(pos) => self.loc(pos),
                    None => Location::whole_file(self.file),
                };
                notes.push(format!(
                    "{loc}: routes: no catch-all route (one without match criteria): requests \
                     that match no route cannot be decided through the server; they wait on \
                     their host and time out per their rule's onTimeout"
                ));
            }
            Some(i) => {
                for (j, r) in routes.iter().enumerate().skip(i + 1) {
                    // routes[] holds only the routes that parsed; with errors there are no
                    // notes at all, so the indices agree with the nodes here.
                    let loc = match route_nodes.get(j) {
                        Some(n) => self.loc(n.pos),
                        None => Location::whole_file(self.file),
                    };
                    notes.push(format!(
                        "{loc}: routes[{j}]: route {:?} is never used: route {:?} above it \
                         matches every request",
                        r.name, routes[i].name
                    ));
                }
            }
        }
        notes
    }
}
