//! `airlock-server hosts enroll|list|revoke`.
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::broker::now_ms;

/// Arguments of `airlock-server hosts`.
#[derive(clap::Args, Debug)]
pub struct HostsArgs {
    #[command(flatten)]
    pub dir: super::DirArgs,
    #[command(subcommand)]
    pub cmd: HostsCmd,
}

/// Host subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum HostsCmd {
    /// Print a one-time enrolment token for host NAME (use it with `airlock enroll`).
    Enroll {
        /// The host's name: its identity on every message from now on.
        name: String,
        /// Labels routes can match, e.g. env=prod,team=web.
        #[arg(long, value_name = "K=V,…")]
        labels: Option<String>,
        /// How long the token stays usable.
        #[arg(long, default_value = "15m", value_parser = super::parse_duration)]
        ttl: Duration,
    },
    /// List hosts.
    List,
    /// Refuse a host from now on; its open stream is cut.
    Revoke {
        /// The host's name.
        name: String,
    },
}

/// Checks a host name: what certificates and routes can carry.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
    if !ok {
        bail!("host name {name:?}: use 1 to 253 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for (i, part) in s.split(',').filter(|p| !p.trim().is_empty()).enumerate() {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--labels: item {} ({part:?}) is not KEY=VALUE", i + 1);
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty()
            || !k
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c))
        {
            bail!(
                "--labels: key {k:?} (item {}): use letters, digits, '-', '_', '.', '/'",
                i + 1
            );
        }
        if m.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--labels: key {k:?} given twice");
        }
    }
    Ok(m)
}

/// Runs a hosts subcommand.
pub fn run(a: HostsArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        let (cfg, store) = a.dir.open().await?;
        match a.cmd {
            HostsCmd::Enroll { name, labels, ttl } => {
                check_name(&name)?;
                let labels = labels
                    .as_deref()
                    .map(parse_labels)
                    .transpose()?
                    .unwrap_or_default();
                let ca = crate::pki::Ca::load(&a.dir.dir).context("loading the CA")?;
                let (token, hash) = crate::pki::new_enrollment_token(&ca)?;
                let now = now_ms();
                store
                    .add_enrollment(&name, &labels, &hash, now + ttl.as_millis() as u64, now)
                    .await?;
                let listen = cfg
                    .listen
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1:7443".into());
                println!("{token}");
                eprintln!(
                    "one-time token for host {name}, valid {}s; on the host run:\n  airlock enroll --server https://{listen} --token TOKEN",
                    ttl.as_secs()
                );
            }
            HostsCmd::List => {
                let hosts = store.hosts().await?;
                println!("{:<24} {:<10} {:<24} LABELS", "HOST", "STATE", "LAST SEEN");
                for h in hosts {
                    let state = if h.revoked_unix_ms.is_some() {
                        "revoked"
                    } else if h.cert_sha256.is_some() {
                        "enrolled"
                    } else {
                        "invited"
                    };
                    let seen = h
                        .last_seen_unix_ms
                        .map(|t| format!("{}s ago", now_ms().saturating_sub(t) / 1000))
                        .unwrap_or("-".into());
                    let labels: Vec<String> =
                        h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:<24} {:<10} {:<24} {}",
                        h.name,
                        state,
                        seen,
                        labels.join(",")
                    );
                }
            }
            HostsCmd::Revoke { name } => {
                store.revoke_host(&name, now_ms()).await?;
                println!(
                    "revoked host {name}: its certificate is refused from now on and an open link is cut within a second"
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_bad_ones_name_the_item() {
        let m = parse_labels("env=prod, team=web").unwrap();
        assert_eq!(m.get("env").map(String::as_str), Some("prod"));
        assert!(
            parse_labels("env")
                .unwrap_err()
                .to_string()
                .contains("item 1")
        );
        assert!(
            parse_labels("a=1,a=2")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(check_name("web-1.example").is_ok());
        assert!(check_name("web 1").is_err());
    }
}
