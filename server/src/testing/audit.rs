//! A host's audit chain for tests: records chained and checkpoints signed the way airlockd's
//! spool does it (airlock-audit's [`Chain`] and [`SigningKey`]), and the [`FakeHost`] calls
//! that ship them (`Hello.audit_key`, `AuditBatch` → `AuditAck`).
use std::time::Duration;

use airlock_audit::{Chain, Checkpoint, Draft, Kind, Record, SigningKey};
use airlock_proto::v1 as pb;
use tonic::Status;

use super::{FAKE_VERSION, FakeHost, HostIdentity};

/// One host's chain and signing key.
pub struct HostChain {
    chain: Chain,
    key: SigningKey,
    /// The next record's `at_unix_ms`.
    pub at_unix_ms: u64,
}

impl HostChain {
    /// A new chain of `host` (records from seq 1) with a new key named after the host.
    pub fn new(host: &str) -> HostChain {
        HostChain {
            chain: Chain::new(host).expect("a valid host name"),
            key: SigningKey::generate(host).expect("generating an Ed25519 key"),
            at_unix_ms: 1_700_000_000_000,
        }
    }

    /// The verifier key text a host sends in `Hello.audit_key`.
    pub fn verifier_key(&self) -> String {
        self.key.verifier().to_string()
    }

    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Chains the next record (`at_unix_ms` advances by one second per record) and returns it
    /// with its canonical text.
    pub fn seal(
        &mut self,
        kind: Kind,
        corr: Option<&str>,
        body: serde_json::Value,
    ) -> (Record, String) {
        let mut d = Draft::new(self.at_unix_ms, kind, body);
        if let Some(c) = corr {
            d = d.corr(c);
        }
        self.at_unix_ms += 1000;
        let r = self.chain.seal(d).expect("an integer-only body");
        let text = canonical(&r);
        (r, text)
    }

    /// [`HostChain::seal`]'s text only.
    pub fn record(&mut self, kind: Kind, body: serde_json::Value) -> String {
        self.seal(kind, None, body).1
    }

    /// `n` `event.allowed` records.
    pub fn records(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.record(
                    Kind::EventAllowed,
                    serde_json::json!({"op": "exec", "i": i}),
                )
            })
            .collect()
    }

    /// A checkpoint of the current head, signed with this chain's key.
    pub fn checkpoint(&self) -> String {
        self.checkpoint_by(&self.key)
    }

    /// A checkpoint of the current head signed with `key`.
    pub fn checkpoint_by(&self, key: &SigningKey) -> String {
        Checkpoint::for_head(self.chain.host(), self.chain.head())
            .sign(key)
            .text()
            .to_string()
    }
}

/// The canonical text of `r` (what a host ships).
pub fn canonical(r: &Record) -> String {
    String::from_utf8(r.to_canonical().expect("a canonical record")).expect("UTF-8")
}

/// An `AuditBatch` of `records` (texts) and `checkpoints`, `first_seq` read from the first.
pub fn batch(records: &[String], checkpoints: &[String]) -> pb::AuditBatch {
    let first_seq = records.first().map_or(0, |t| {
        serde_json::from_str::<Record>(t)
            .map(|r| r.seq)
            .unwrap_or(0)
    });
    pb::AuditBatch {
        first_seq,
        records: records.to_vec(),
        checkpoints: checkpoints.to_vec(),
    }
}

impl FakeHost {
    /// [`FakeHost::connect`] with `audit_key` in the Hello.
    pub async fn connect_with_audit_key(
        url: &str,
        ca_pem: &str,
        id: &HostIdentity,
        audit_key: &str,
    ) -> Result<FakeHost, Status> {
        let hello = pb::Hello {
            version: FAKE_VERSION.into(),
            pending: Vec::new(),
            audit_key: audit_key.to_string(),
        };
        FakeHost::connect_with_hello(url, ca_pem, id, hello).await
    }

    /// Sends `batch` and waits for its `AuditAck`.
    pub async fn audit(
        &mut self,
        batch: pb::AuditBatch,
        timeout: Duration,
    ) -> anyhow::Result<pb::AuditAck> {
        self.send_audit(batch)?;
        self.audit_ack(timeout).await
    }

    /// Sends `batch` without waiting for its `AuditAck` (a host keeps a few batches in
    /// flight; the acks come in order, through [`FakeHost::audit_ack`]).
    pub fn send_audit(&self, batch: pb::AuditBatch) -> anyhow::Result<()> {
        self.send(pb::HostMessage {
            body: Some(pb::host_message::Body::Audit(batch)),
        })
    }

    /// Waits for the next `AuditAck`.
    pub async fn audit_ack(&mut self, timeout: Duration) -> anyhow::Result<pb::AuditAck> {
        match self.recv(timeout).await? {
            pb::ServerMessage {
                body: Some(pb::server_message::Body::AuditAck(a)),
            } => Ok(a),
            other => anyhow::bail!("{}: expected an AuditAck, got {other:?}", self.name),
        }
    }
}
