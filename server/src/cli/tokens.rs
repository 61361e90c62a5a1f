//! `airlock-server tokens issue|list|revoke`.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;

use crate::broker::now_ms;

/// Arguments of `airlock-server tokens`.
#[derive(clap::Args, Debug)]
pub struct TokensArgs {
    #[command(flatten)]
    pub dir: super::DirArgs,
    #[command(subcommand)]
    pub cmd: TokensCmd,
}

/// Token subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokensCmd {
    /// Print a new API token for PRINCIPAL (shown once; only its hash is stored).
    Issue {
        /// A principal from server.yaml.
        principal: String,
        /// How long the token is valid.
        #[arg(long, default_value = "90d", value_parser = super::parse_duration)]
        ttl: Duration,
    },
    /// List tokens (ids, principals, expiry; never the secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The id `tokens list` shows.
        id: String,
    },
}

/// Runs a tokens subcommand.
pub fn run(a: TokensArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        let (cfg, store) = a.dir.open().await?;
        match a.cmd {
            TokensCmd::Issue { principal, ttl } => {
                if cfg.principal(&principal).is_none() {
                    let known: Vec<&String> = cfg.principals.keys().collect();
                    bail!(
                        "principal {principal:?} is not in {} (known: {known:?})",
                        super::config_path(&a.dir.dir).display()
                    );
                }
                let (secret, row) =
                    crate::auth::issue(&store, &principal, ttl.as_millis() as u64, now_ms())
                        .await?;
                println!("{secret}");
                eprintln!("token {} for {principal}, valid {}s", row.id, ttl.as_secs());
            }
            TokensCmd::List => {
                println!(
                    "{:<10} {:<20} {:<10} EXPIRES IN",
                    "ID", "PRINCIPAL", "STATE"
                );
                let now = now_ms();
                for t in store.tokens().await? {
                    let state = if t.revoked_unix_ms.is_some() {
                        "revoked"
                    } else if now >= t.expires_unix_ms {
                        "expired"
                    } else {
                        "valid"
                    };
                    println!(
                        "{:<10} {:<20} {:<10} {}s",
                        t.id,
                        t.principal,
                        state,
                        t.expires_unix_ms.saturating_sub(now) / 1000
                    );
                }
            }
            TokensCmd::Revoke { id } => {
                store.revoke_token(&id, now_ms()).await?;
                println!("revoked token {id}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
