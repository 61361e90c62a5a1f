//! A fake HTTP receiver on loopback for the outbound channels' tests (a Teams Workflows
//! trigger, a webhook endpoint): axum on 127.0.0.1:0, answering the n-th POST with
//! `statuses[n]` (200 past the end) and handing every POST over.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::sync::mpsc;

/// One POST as the receiver saw it.
#[derive(Debug)]
pub struct Post {
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Post {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    statuses: Vec<u16>,
    n: AtomicUsize,
    tx: mpsc::UnboundedSender<Post>,
}

/// Starts a receiver; returns its base URL `http://127.0.0.1:PORT` and the POSTs it gets.
pub async fn start(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Post>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        statuses,
        n: AtomicUsize::new(0),
        tx,
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(shared);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (base, rx)
}

async fn handle(
    State(s): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let n = s.n.fetch_add(1, Ordering::SeqCst);
    let _ = s.tx.send(Post {
        uri: uri.to_string(),
        headers,
        body,
    });
    StatusCode::from_u16(s.statuses.get(n).copied().unwrap_or(200)).unwrap()
}

/// The next POST within `t`.
pub async fn next(rx: &mut mpsc::UnboundedReceiver<Post>, t: Duration) -> Post {
    tokio::time::timeout(t, rx.recv())
        .await
        .expect("a POST in time")
        .expect("receiver running")
}

/// Fails if a POST arrives within `t`.
pub async fn none_within(rx: &mut mpsc::UnboundedReceiver<Post>, t: Duration) {
    if let Ok(Some(p)) = tokio::time::timeout(t, rx.recv()).await {
        panic!(
            "unexpected POST: {} {}",
            p.uri,
            String::from_utf8_lossy(&p.body)
        );
    }
}
