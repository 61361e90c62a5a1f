//! `GET /audit`: the collector's records of the fleet (and its alerts), searched by host,
//! agent, kind, decision, approver and time window, oldest first within the window, a page at
//! a time (the next page continues from the last record's storage cursor).
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::App;
use super::pages::{fault_page, page_session, render};
use crate::broker::{now_ms, utc};
use crate::store::AuditFilter;

/// Records per page.
const PAGE: u32 = 200;

/// The time windows offered, as (value, label).
const WINDOWS: [(&str, &str); 5] = [
    ("1h", "last hour"),
    ("24h", "last 24 hours"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
    ("all", "all kept"),
];

/// The search as typed (empty means any).
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditForm {
    #[serde(default)]
    host: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    approver: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    after: u64,
}

/// One row of the table.
struct Row {
    time: String,
    host: String,
    seq: u64,
    kind: String,
    agent: String,
    what: String,
    decision: String,
    corr: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    me: String,
    csrf: String,
    f: AuditForm,
    windows: Vec<(&'static str, &'static str)>,
    rows: Vec<Row>,
    alerts: Vec<(String, String, String)>,
    next: Option<String>,
    page: u32,
    error: Option<String>,
}

fn some(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

/// What the record is about, in a few words (operation and target when it has them).
fn what(v: &serde_json::Value) -> String {
    let b = &v["body"];
    let target = b["target_path"]
        .as_str()
        .or_else(|| b["request"]["context"]["target_path"].as_str())
        .unwrap_or("");
    let op = b["op"].as_str().unwrap_or("");
    crate::text::shown(format!("{op} {target}").trim())
}

pub(super) async fn page(
    State(app): State<App>,
    headers: HeaderMap,
    Query(mut f): Query<AuditForm>,
) -> Response {
    let s = match page_session(&app, &headers, "/audit").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if f.since.is_empty() {
        f.since = "24h".into();
    }
    let mut error = None;
    let window_ms = match f.since.as_str() {
        "all" => None,
        w => match crate::cli::parse_duration(w) {
            Ok(d) => Some(d.as_millis() as u64),
            Err(e) => {
                error = Some(format!("since: {e}"));
                Some(86_400_000)
            }
        },
    };
    let filter = AuditFilter {
        host: some(&f.host),
        agent: some(&f.agent),
        since_unix_ms: window_ms.map(|w| now_ms().saturating_sub(w)),
        until_unix_ms: None,
        op: None,
        decision: some(&f.decision),
        approver: some(&f.approver),
        kind: some(&f.kind),
        after_cursor: f.after,
        limit: PAGE,
    };
    let store = &app.broker.store;
    let (rows, alerts) = match (
        store.audit_records(&filter).await,
        store
            .audit_alerts(&AuditFilter {
                host: filter.host.clone(),
                since_unix_ms: filter.since_unix_ms,
                limit: 20,
                ..Default::default()
            })
            .await,
    ) {
        (Ok(r), Ok(a)) => (r, a),
        (Err(e), _) | (_, Err(e)) => return fault_page(e.into()),
    };
    let next = (rows.len() as u32 == PAGE).then(|| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("host", &f.host)
            .append_pair("agent", &f.agent)
            .append_pair("kind", &f.kind)
            .append_pair("decision", &f.decision)
            .append_pair("approver", &f.approver)
            .append_pair("since", &f.since)
            .append_pair("after", &rows.last().map_or(0, |r| r.cursor).to_string())
            .finish();
        format!("/audit?{q}")
    });
    let rows = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.record).unwrap_or_default();
            let s = |k: &str| crate::text::shown(v["body"][k].as_str().unwrap_or("-"));
            Row {
                time: utc(r.at_unix_ms),
                host: r.host.clone(),
                seq: r.seq,
                kind: r.kind.clone(),
                agent: s("agent"),
                what: what(&v),
                decision: s("decision"),
                corr: crate::text::shown(v["corr"].as_str().unwrap_or("-")),
            }
        })
        .collect();
    let alerts = alerts
        .iter()
        .map(|a| {
            (
                utc(a.at_unix_ms),
                a.host.clone(),
                crate::text::shown(&a.message),
            )
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        &AuditPage {
            me: s.session.principal,
            csrf: s.session.csrf,
            f,
            windows: WINDOWS.to_vec(),
            rows,
            alerts,
            next,
            page: PAGE,
            error,
        },
    )
}
