//! `airlock audit`: the tamper-evident audit stream (airlock-audit).
//!
//! - `verify [PATH]`: checks a spool directory or an export (JSON Lines) against the host's
//!   audit key: the hash chain, every checkpoint's signature, and optionally that the records
//!   reach a checkpoint the collector acknowledged (a cut tail). Names the first bad sequence
//!   number; exit 1 when anything is wrong.
//! - `export`: this host's spool as JSON Lines (records and checkpoints), or OCSF JSON.
//! - `key`: this host's audit verifier key (what the collector trusts).
//! - `query` (`--server`): the collector's records of the fleet, filtered; `-f` follows.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_audit::{Entry, Record, SignedCheckpoint, SigningKey, VerifierKey, VerifyOptions};
use airlock_proto::v1 as pb;
use anyhow::{Context as _, bail};

/// Arguments of `airlock audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub cmd: AuditCmd,
}

/// `airlock audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Check a spool directory or an export for changed, missing, inserted or reordered records.
    Verify(VerifyArgs),
    /// Write this host's spool as JSON Lines (or OCSF JSON Lines).
    Export(ExportArgs),
    /// Print this host's audit verifier key.
    Key(KeyArgs),
    /// The collector's records (airlock-server), filtered; --follow prints new ones as stored.
    Query(QueryArgs),
}

/// Where this host's audit files are.
#[derive(clap::Args, Debug)]
pub struct Local {
    /// airlockd's state directory (it names the default --audit-dir).
    #[arg(long, env = "AIRLOCK_STATE_DIR", default_value = crate::paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// airlockd's audit directory (the spool is AUDIT_DIR/HOST) [default:
    /// /var/lib/airlock/audit; STATE_DIR/audit when --state-dir is not the default].
    #[arg(long, env = "AIRLOCK_AUDIT_DIR", value_name = "DIR")]
    pub audit_dir: Option<PathBuf>,
    /// The enrolled identity (its audit.key), when the host is linked.
    #[arg(long, default_value = "/var/lib/airlock/identity")]
    pub identity_dir: PathBuf,
}

impl Local {
    /// The audit directory, as airlockd picks it.
    fn audit_dir(&self) -> PathBuf {
        self.audit_dir
            .clone()
            .unwrap_or_else(|| crate::paths::audit_dir(&self.state_dir))
    }

    /// The audit key file in use: the identity's when there is one, else the audit dir's.
    fn key_file(&self) -> PathBuf {
        let id = self.identity_dir.join(crate::daemon::audit::AUDIT_KEY);
        if id.exists() {
            id
        } else {
            self.audit_dir().join(crate::daemon::audit::AUDIT_KEY)
        }
    }

    /// The only spool directory under AUDIT_DIR (a host has one name).
    fn spool_dir(&self) -> anyhow::Result<PathBuf> {
        let base = self.audit_dir();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .with_context(|| format!("{}: no audit spool here", base.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        match dirs.len() {
            1 => Ok(dirs.remove(0)),
            0 => bail!("{}: no audit spool here", base.display()),
            _ => bail!(
                "{}: several spools ({}); name one as PATH",
                base.display(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// `airlock audit verify`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// A spool directory or an export file [default: this host's spool].
    pub path: Option<PathBuf>,
    /// The verifier key (NAME+KEYID+BASE64, as `airlock audit key` prints it) or a file
    /// holding it or the host's audit.key [default: this host's key].
    #[arg(long)]
    pub key: Option<String>,
    /// A checkpoint (signed note file) the collector acknowledged: the records must reach it.
    #[arg(long, value_name = "FILE")]
    pub acknowledged: Option<PathBuf>,
    #[command(flatten)]
    pub local: Local,
}

/// `airlock audit export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// From this sequence number on [default: the oldest kept].
    #[arg(long)]
    pub from: Option<u64>,
    /// Records as OCSF JSON (only those with an OCSF class; no checkpoints).
    #[arg(long)]
    pub ocsf: bool,
    #[command(flatten)]
    pub local: Local,
}

/// `airlock audit key`.
#[derive(clap::Args, Debug)]
pub struct KeyArgs {
    #[command(flatten)]
    pub local: Local,
}

/// `airlock audit query`.
#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    /// Records at or after this Unix time in milliseconds.
    #[arg(long, value_name = "UNIX_MS")]
    pub since: Option<u64>,
    /// Records before this Unix time in milliseconds.
    #[arg(long, value_name = "UNIX_MS")]
    pub until: Option<u64>,
    /// Operation (exec, open_write, …).
    #[arg(long)]
    pub operation: Option<String>,
    /// approved, denied, timed_out, abandoned.
    #[arg(long)]
    pub decision: Option<String>,
    /// Who decided.
    #[arg(long)]
    pub approver: Option<String>,
    /// Record kind (request.opened, event.held, outcome, …).
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Keep printing records as the collector stores them.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The collector's alerts (broken chains, refused batches) instead of records.
    #[arg(long)]
    pub alerts: bool,
    /// One JSON record per line (as stored) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `airlock audit …`.
pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.cmd {
        AuditCmd::Verify(a) => verify(a),
        AuditCmd::Export(a) => export(a),
        AuditCmd::Key(a) => {
            let k = SigningKey::load(&a.local.key_file())
                .with_context(|| format!("{}", a.local.key_file().display()))?;
            println!("{}", k.verifier());
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Query(a) => query(a),
    }
}

/// A verifier key from its text, a file holding it, or a signing key file.
fn verifier(given: Option<&str>, local: &Local) -> anyhow::Result<VerifierKey> {
    let text = match given {
        Some(t) if Path::new(t).is_file() => {
            let p = Path::new(t);
            match SigningKey::load(p) {
                Ok(k) => return Ok(k.verifier()),
                Err(_) => std::fs::read_to_string(p)
                    .with_context(|| p.display().to_string())?
                    .trim()
                    .to_string(),
            }
        }
        Some(t) => t.to_string(),
        None => {
            let f = local.key_file();
            return Ok(SigningKey::load(&f)
                .with_context(|| format!("{} (give --key)", f.display()))?
                .verifier());
        }
    };
    text.parse()
        .with_context(|| "--key: expected NAME+KEYID+BASE64 or a key file".to_string())
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = verifier(a.key.as_deref(), &a.local)?;
    let acknowledged = match &a.acknowledged {
        Some(f) => Some(
            SignedCheckpoint::parse(
                &std::fs::read_to_string(f).with_context(|| f.display().to_string())?,
            )
            .with_context(|| format!("{}: not a signed checkpoint", f.display()))?,
        ),
        None => None,
    };
    let opts = VerifyOptions {
        acknowledged,
        ..Default::default()
    };
    let path = match a.path {
        Some(p) => p,
        None => a.local.spool_dir()?,
    };
    let report = if path.is_dir() {
        airlock_audit::verify_spool_dir(&key, &opts, &path)
    } else {
        let f = std::fs::File::open(&path).with_context(|| path.display().to_string())?;
        airlock_audit::verify_export(&key, &opts, std::io::BufReader::new(f))
    }
    .with_context(|| path.display().to_string())?;
    let c = &report.counts;
    let range = match (c.first_seq, c.last_seq) {
        (Some(f), Some(l)) => format!("seq {f}..{l}"),
        _ => "no records".into(),
    };
    println!(
        "{}: {} records ({range}), {} checkpoints verified{}{}",
        path.display(),
        c.records,
        c.checkpoints_verified,
        if c.checkpoints_skipped > 0 {
            format!(", {} before the first record", c.checkpoints_skipped)
        } else {
            String::new()
        },
        if c.anchored {
            ""
        } else {
            " (the first record is not tied to seq 1 or a checkpoint)"
        },
    );
    match &report.problem {
        None => {
            println!(
                "ok: the chain is whole and every checkpoint verifies with {}",
                key.name()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            println!("BROKEN at seq {}: {p}", p.first_bad_seq());
            Ok(ExitCode::from(1))
        }
    }
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let dir = a.local.spool_dir()?;
    let entries =
        airlock_audit::spool::read_dir(&dir).with_context(|| dir.display().to_string())?;
    let mut out = std::io::stdout().lock();
    for e in entries {
        let e = e.with_context(|| dir.display().to_string())?;
        if let Entry::Record(r) = &e
            && a.from.is_some_and(|f| r.seq < f)
        {
            continue;
        }
        let line = match (&e, a.ocsf) {
            (_, false) => e.to_line(),
            (Entry::Record(r), true) => match ocsf_line(r) {
                Some(l) => l,
                None => continue,
            },
            (Entry::Checkpoint(_), true) => continue,
        };
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A record as an OCSF event (its class fields, time, and airlock's record kept whole under
/// `unmapped` so nothing is lost), or `None` when it has no OCSF class.
pub fn ocsf_line(r: &Record) -> Option<String> {
    let o = airlock_audit::ocsf::map_record(r)?;
    Some(
        serde_json::json!({
            "category_uid": o.category_uid,
            "class_uid": o.class_uid,
            "activity_id": o.activity_id,
            "type_uid": o.type_uid,
            "disposition_id": o.disposition_id,
            "time": r.at_unix_ms,
            "severity_id": 1,
            "metadata": {"product": {"name": "airlock", "vendor_name": "airlock"}, "version": "1.1.0",
                         "correlation_uid": r.corr, "sequence": r.seq, "uid": r.hash.to_string()},
            "device": {"hostname": r.host},
            "actor": {"user": {"name": r.body.get("approver")}},
            "unmapped": {"airlock": r.body, "kind": r.kind.as_str()},
        })
        .to_string(),
    )
}

fn query(a: QueryArgs) -> anyhow::Result<ExitCode> {
    if a.api.server.is_none() {
        bail!("audit query asks airlock-server's collector: pass --server URL (or AIRLOCK_SERVER)");
    }
    let req = pb::AuditQueryRequest {
        host: a.host.clone().unwrap_or_default(),
        agent: a.agent.clone().unwrap_or_default(),
        since_unix_ms: a.since.unwrap_or(0),
        until_unix_ms: a.until.unwrap_or(0),
        operation: a.operation.clone().unwrap_or_default(),
        decision: a.decision.clone().unwrap_or_default(),
        approver: a.approver.clone().unwrap_or_default(),
        kind: a.kind.clone().unwrap_or_default(),
        limit: a.limit,
        after_cursor: 0,
        follow: a.follow,
        alerts: a.alerts,
    };
    let json = a.json;
    super::with_client(&a.api, |mut c| async move {
        let mut stream = c.audit_query(req).await?.into_inner();
        let mut out = std::io::stdout();
        if !json {
            writeln!(
                out,
                "{:<24} {:>7} {:<24} {:<16} {:<10} {:<10} CORR",
                "HOST", "SEQ", "TIME", "KIND", "AGENT", "DECISION"
            )?;
        }
        while let Some(e) = stream.message().await? {
            if json {
                writeln!(out, "{}", e.record)?;
            } else {
                let v: serde_json::Value = serde_json::from_str(&e.record).unwrap_or_default();
                let s = |k: &str| v["body"][k].as_str().unwrap_or("-").to_string();
                writeln!(
                    out,
                    "{:<24} {:>7} {:<24} {:<16} {:<10} {:<10} {}",
                    e.host,
                    e.seq,
                    v["at_unix_ms"]
                        .as_u64()
                        .map(|t| super::show::local_time(t, true))
                        .unwrap_or_default(),
                    v["kind"].as_str().unwrap_or(if v["message"].is_string() {
                        "alert"
                    } else {
                        "-"
                    }),
                    s("agent"),
                    s("decision"),
                    v["corr"].as_str().or(v["message"].as_str()).unwrap_or("-"),
                )?;
            }
            out.flush()?;
        }
        Ok(ExitCode::SUCCESS)
    })
}
