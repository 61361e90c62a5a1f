//! `airlock-server audit verify [--host NAME]`: checks the collector's store again, host by
//! host (see `audit_verify.rs`); prints what was checked and the first bad sequence number.
//! Exit 0 when every chain is whole, 1 when any is broken.
use std::process::ExitCode;

/// Arguments of `airlock-server audit`.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub cmd: AuditCmd,
    #[command(flatten)]
    pub dir: super::DirArgs,
}

/// `airlock-server audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Verify every host's stored chain (or one host's) against its checkpoints and key.
    Verify {
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
    },
}

/// Runs `airlock-server audit`.
pub fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    super::block_on(async move {
        let (_, store) = a.dir.open().await?;
        let AuditCmd::Verify { host } = a.cmd;
        let reports = crate::audit_verify::verify_store(&store, host.as_deref()).await?;
        if reports.is_empty() {
            anyhow::bail!(
                "no audit chain {}in the store",
                host.map(|h| format!("of host {h} ")).unwrap_or_default()
            );
        }
        let mut broken = 0;
        for r in &reports {
            let c = &r.counts;
            let range = match (c.first_seq, c.last_seq) {
                (Some(f), Some(l)) => format!("seq {f}..{l}"),
                _ => "no records".into(),
            };
            let verdict = match &r.problem {
                None => "ok".to_string(),
                Some(p) => {
                    broken += 1;
                    format!("BROKEN at seq {}: {p}", p.first_bad_seq())
                }
            };
            println!(
                "{}: {} records ({range}), {} checkpoints verified: {verdict}",
                r.host, c.records, c.checkpoints_verified
            );
        }
        Ok(if broken == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}
