//! What the Slack test files share: a server with the Slack channel pointed at a fake Slack,
//! and waiting for what the channel does.
#![allow(dead_code)]
use std::time::Duration;

use airlock_approval::RequestState;
use airlock_server::store::Store;
use airlock_server::testing::slack::{Call, FakeSlack};
use airlock_server::testing::{FakeHost, Options, TempDir, TestServer, wait_stored};
use serde_json::Value;

pub const T: Duration = Duration::from_secs(10);
pub const CHANNEL: &str = "C0APPROVE";
pub const SIGNING: &str = "slack-signing-secret";
/// alice is U0ALICE (host user alice), bob U0BOB, carol U0CAROL (not an approver).
pub const ALICE: &str = "U0ALICE";
pub const BOB: &str = "U0BOB";

/// How a test's server takes Slack's clicks.
#[derive(Clone, Copy, PartialEq)]
#[allow(dead_code)]
pub enum Mode {
    Socket,
    Http,
}

/// A server with the Slack channel pointed at `fake`; token files in `tokens`.
pub fn config(fake: &FakeSlack, tokens: &TempDir, mode: Mode, web_only: bool) -> String {
    let t = tokens.path();
    std::fs::write(t.join("bot"), "xoxb-test-bot\n").unwrap();
    std::fs::write(t.join("app"), "xapp-test-app\n").unwrap();
    std::fs::write(t.join("signing"), SIGNING).unwrap();
    let transport = match mode {
        Mode::Socket => format!("  app_token_file: {}\n", t.join("app").display()),
        Mode::Http => format!(
            "  mode: http\n  signing_secret_file: {}\n",
            t.join("signing").display()
        ),
    };
    let (web, channels) = if web_only {
        (
            "web:\n  public_url: https://airlock.example.com\n",
            "[cli, slack, web]",
        )
    } else {
        ("", "[cli, slack]")
    };
    format!(
        "http_listen: 127.0.0.1:1\n{web}principals:\n  alice: {{ groups: [sre], host_users: [alice] }}\n  \
         bob: {{ groups: [sre] }}\n  carol: {{ groups: [dba] }}\nroutes:\n  - name: default\n    \
         approvers: [sre]\n    channels: {channels}\n    web_only: {web_only}\n\
         slack:\n  bot_token_file: {}\n{transport}  channel: {CHANNEL}\n  api_url: {}\n  \
         users:\n    U0ALICE: alice\n    U0BOB: bob\n    U0CAROL: carol\n",
        t.join("bot").display(),
        fake.api_url,
    )
}

pub struct Env {
    pub srv: TestServer,
    pub fake: FakeSlack,
    _tokens: TempDir,
}

pub async fn start(mode: Mode, web_only: bool) -> Env {
    let fake = FakeSlack::start().await.unwrap();
    let tokens = TempDir::new("airlock-slack-tokens").unwrap();
    let srv = TestServer::with(Options {
        config: config(&fake, &tokens, mode, web_only),
        ..Options::default()
    })
    .await
    .unwrap();
    if mode == Mode::Socket {
        fake.wait_connections(1, T).await;
    }
    Env {
        srv,
        fake,
        _tokens: tokens,
    }
}

/// Opens a request on `host` and waits for its Slack message; the message's call.
pub async fn open(env: &Env, host: &FakeHost, r: &airlock_proto::v1::HoldRequest) -> Call {
    let before = env.fake.calls("chat.postMessage").len();
    host.opened(r.clone()).unwrap();
    wait_stored(&env.srv.store, &r.id, T).await.unwrap();
    let c = env.fake.wait_calls("chat.postMessage", before + 1, T).await;
    c[before].clone()
}

/// The message's ts as stored.
pub async fn ts_of(store: &Store, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(m) = store.slack_message(id).await.unwrap() {
            return m.ts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stored message for {id}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Attempts recorded on channel slack for `id`, as "who RESULT message".
pub async fn recorded(srv: &TestServer, id: Option<&str>) -> Vec<String> {
    srv.store
        .attempts(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.channel == "slack" && a.request_id.as_deref() == id)
        .map(|a| format!("{} {} {}", a.who, a.result, a.message))
        .collect()
}

/// Waits for a record on `id` starting with `prefix`.
pub async fn wait_recorded(srv: &TestServer, id: Option<&str>, prefix: &str) -> String {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = recorded(srv, id).await;
        if let Some(m) = r.iter().find(|m| m.starts_with(prefix)) {
            return m.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record {prefix:?}: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The blocks of `body` of type `kind`.
pub fn blocks_of<'v>(body: &'v Value, kind: &str) -> Vec<&'v Value> {
    body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == kind)
        .collect()
}

/// Waits until the host closed `id` in the store (its outcome arrived).
pub async fn wait_closed(store: &Store, id: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while store.request(id).await.unwrap().unwrap().state == RequestState::Pending {
        assert!(tokio::time::Instant::now() < deadline, "{id} still pending");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
