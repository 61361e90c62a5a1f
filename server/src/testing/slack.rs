//! A fake Slack on loopback, for the Slack channel's tests: the Web API methods the channel
//! calls (recording each call's exact JSON, answering as Slack does, failing on demand) and
//! a Socket Mode WebSocket endpoint that says hello, sends the envelopes a test asks for,
//! tells the client to reconnect, and records the acks it gets.
//!
//! Calls and acks share one sequence number, so a test can check that an envelope was
//! acknowledged before the work it caused.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// One call of a Web API method, or an ack on the WebSocket (method `ack`).
#[derive(Clone, Debug)]
pub struct Call {
    /// Order among all calls and acks.
    pub seq: u64,
    pub method: String,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// The JSON body (`Null` for an empty form).
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
}

/// How a method answers instead of succeeding.
#[derive(Clone, Debug)]
pub enum Failure {
    /// This HTTP status, with `Retry-After: N` seconds when given.
    Status(u16, Option<u64>),
    /// `{"ok": false, "error": …}`.
    Error(&'static str),
}

#[derive(Default)]
struct Inner {
    seq: u64,
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    next_ts: u64,
    next_envelope: u64,
    connections: u32,
    /// The newest WebSocket connection's outbox.
    socket: Option<mpsc::UnboundedSender<Message>>,
    ws_url: String,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Slack's Web API under `{api_url}/METHOD` and Socket Mode on a loopback WebSocket; both
/// stop when this is dropped.
pub struct FakeSlack {
    /// What `slack.api_url` is set to.
    pub api_url: String,
    state: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeSlack {
    /// Starts both endpoints on ephemeral loopback ports.
    pub async fn start() -> std::io::Result<FakeSlack> {
        let state: Shared = Arc::default();
        let api = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api_url = format!("http://{}/api", api.local_addr()?);
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        lock(&state).ws_url = format!("ws://{}/link", ws.local_addr()?);
        lock(&state).next_ts = 1_700_000_000_000_100;
        let app = Router::new()
            .route("/api/{method}", post(method))
            .with_state(state.clone());
        let http = tokio::spawn(async move {
            let _ = axum::serve(api, app).await;
        });
        let st = state.clone();
        let sockets = tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                tokio::spawn(socket(st.clone(), tcp));
            }
        });
        Ok(FakeSlack {
            api_url,
            state,
            tasks: vec![http, sockets],
        })
    }

    /// The next `n` calls of `method` answer `f` (then it succeeds again).
    pub fn fail(&self, method: &str, n: usize, f: Failure) {
        let mut s = lock(&self.state);
        let q = s.failures.entry(method.to_string()).or_default();
        q.extend(std::iter::repeat_n(f, n));
    }

    /// Every call of `method` so far (`ack` for WebSocket acks), in order.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        lock(&self.state)
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Waits until `method` was called at least `n` times; those calls.
    pub async fn wait_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let c = self.calls(method);
            if c.len() >= n {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fake Slack: {method} called {} times in {timeout:?}, wanted {n}",
                c.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// WebSocket connections accepted so far.
    pub fn connections(&self) -> u32 {
        lock(&self.state).connections
    }

    /// Waits until `n` WebSocket connections were accepted.
    pub async fn wait_connections(&self, n: u32, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connections() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fake Slack: {} WebSocket connections in {timeout:?}, wanted {n}",
                self.connections()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends an `interactive` envelope with `payload` on the newest connection; its id.
    pub fn interactive(&self, payload: Value) -> String {
        let mut s = lock(&self.state);
        s.next_envelope += 1;
        let id = format!("env-{}", s.next_envelope);
        let env = json!({
            "envelope_id": id,
            "type": "interactive",
            "accepts_response_payload": false,
            "payload": payload,
        });
        let tx = s
            .socket
            .clone()
            .expect("fake Slack: no WebSocket connection");
        tx.send(Message::Text(env.to_string().into()))
            .expect("fake Slack: connection gone");
        id
    }

    /// Tells the newest connection to reconnect (`disconnect`, reason `refresh_requested`).
    pub fn disconnect(&self) {
        let s = lock(&self.state);
        let env = json!({
            "type": "disconnect",
            "reason": "refresh_requested",
            "debug_info": {"host": "fake-slack"},
        });
        if let Some(tx) = &s.socket {
            let _ = tx.send(Message::Text(env.to_string().into()));
        }
    }

    /// Drops the newest connection without a word (a network failure).
    pub fn cut(&self) {
        if let Some(tx) = lock(&self.state).socket.take() {
            let _ = tx.send(Message::Close(None));
        }
    }
}

/// `POST /api/METHOD`.
async fn method(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json_body = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let mut s = lock(&state);
    s.seq += 1;
    let seq = s.seq;
    s.calls.push(Call {
        seq,
        method: name.clone(),
        auth: auth.clone(),
        body: json_body.clone(),
        at: std::time::Instant::now(),
    });
    if let Some(f) = s.failures.get_mut(&name).and_then(VecDeque::pop_front) {
        return match f {
            Failure::Status(code, retry_after) => {
                let mut r = (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "failing on purpose",
                )
                    .into_response();
                if let Some(secs) = retry_after {
                    r.headers_mut().insert("retry-after", secs.into());
                }
                r
            }
            Failure::Error(e) => axum::Json(json!({"ok": false, "error": e})).into_response(),
        };
    }
    let token_kind = if name == "apps.connections.open" {
        "Bearer xapp-"
    } else {
        "Bearer xoxb-"
    };
    if !auth.as_deref().is_some_and(|a| a.starts_with(token_kind)) {
        return axum::Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    let answer = match name.as_str() {
        "chat.postMessage" => {
            s.next_ts += 100;
            let ts = format!("{}.{:06}", s.next_ts / 1_000_000, s.next_ts % 1_000_000);
            json!({"ok": true, "channel": json_body["channel"], "ts": ts, "message": {"text": json_body["text"]}})
        }
        "chat.update" => {
            json!({"ok": true, "channel": json_body["channel"], "ts": json_body["ts"], "text": json_body["text"]})
        }
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1700000000.999999"}),
        "views.open" => json!({"ok": true, "view": {"id": "V0FAKE"}}),
        "apps.connections.open" => json!({"ok": true, "url": s.ws_url}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    };
    axum::Json(answer).into_response()
}

/// One Socket Mode connection: hello, then the test's envelopes out and acks in.
async fn socket(state: Shared, tcp: tokio::net::TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut s = lock(&state);
        s.connections += 1;
        s.socket = Some(tx);
    }
    let hello =
        json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FAKE"}});
    if ws
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Message::Close(_)) | None => return,
                Some(m) => if ws.send(m).await.is_err() { return },
            },
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    let mut s = lock(&state);
                    s.seq += 1;
                    let seq = s.seq;
                    s.calls.push(Call { seq, method: "ack".into(), auth: None, body: v, at: std::time::Instant::now() });
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// A click on one of a request's buttons, as Slack sends it (`block_actions`).
pub fn click(user: &str, action_id: &str, id: &str, channel: &str, ts: &str) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0FAKE"},
        "api_app_id": "A0FAKE",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "1234.5678.trigger",
        "channel": {"id": channel, "name": "approvals"},
        "message": {"type": "message", "ts": ts, "text": "airlock"},
        "response_url": "https://hooks.slack.invalid/actions/T/1/x",
        "actions": [{
            "action_id": action_id,
            "block_id": crate::slack::APPROVE.replace("approve", "decide"),
            "type": "button",
            "value": id,
            "action_ts": "1700000000.1",
        }],
    })
}

/// The deny modal's submission with `reason` (`metadata` as the modal carried it).
pub fn deny_submission(user: &str, metadata: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T0FAKE"},
        "api_app_id": "A0FAKE",
        "team": {"id": "T0FAKE", "domain": "fake"},
        "trigger_id": "1234.5679.trigger",
        "view": {
            "id": "V0FAKE",
            "type": "modal",
            "callback_id": crate::slack::DENY_MODAL,
            "private_metadata": metadata,
            "state": {"values": {crate::slack::REASON_BLOCK: {crate::slack::REASON_INPUT: {"type": "plain_text_input", "value": reason}}}},
        },
    })
}
