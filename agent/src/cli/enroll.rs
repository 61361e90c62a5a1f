//! `airlock enroll`: trade a one-time token from `airlock-server hosts enroll NAME` for this
//! host's certificate, and store the identity airlockd uses to reach the server.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::link::enroll::{EnrollError, enroll};
use crate::link::identity::{Identity, IdentityError};

/// Arguments of `airlock enroll`.
#[derive(clap::Args, Debug)]
pub struct EnrollArgs {
    /// The server, `https://HOST[:PORT]` (port 443 when left out).
    #[arg(long, env = "AIRLOCK_SERVER", value_name = "URL")]
    pub server: String,
    /// The one-time token `airlock-server hosts enroll NAME` printed (from the environment, it
    /// stays out of the process list).
    #[arg(
        long,
        env = "AIRLOCK_ENROLL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// Where to write the host key, certificate, server CA and server URL.
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
}

/// Enrols the host; prints its name and where the identity went. Exit 1 when the server
/// refused (bad, used or expired token); other failures propagate (exit 2).
pub fn run(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let explicit_dir = args.identity_dir.is_some();
    let dir = args.identity_dir.unwrap_or_else(Identity::dir_default);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match rt.block_on(enroll(&args.server, &args.token, &dir)) {
        Ok(out) => {
            println!("enrolled as {}", out.host);
            println!(
                "identity   {} (host.key, host.pem, ca.pem, server)",
                out.dir.display()
            );
            // The host's audit key is made here, beside the identity, readable by root only;
            // airlockd signs its audit checkpoints with it and the collector trusts the first
            // key it sees from this host.
            let key_file = out.dir.join(crate::daemon::audit::AUDIT_KEY);
            let key =
                crate::daemon::audit::load_or_make_key(&key_file, &format!("airlock-{}", out.host))
                    .with_context(|| key_file.display().to_string())?;
            println!("audit key  {} ({})", key_file.display(), key.verifier());
            Ok(ExitCode::SUCCESS)
        }
        Err(EnrollError::Refused { message, .. }) => {
            eprintln!("airlock: {message}");
            Ok(ExitCode::from(1))
        }
        // The default directory is root's: say so instead of a bare EACCES.
        Err(EnrollError::Identity(IdentityError::Write { path, source }))
            if source.kind() == std::io::ErrorKind::PermissionDenied
                && !explicit_dir
                && !is_root() =>
        {
            anyhow::bail!(
                "cannot write {}: permission denied; run as root, or pass --identity-dir with a directory you can write",
                path.display()
            )
        }
        // Our messages already name the cause; anyhow's `{:#}` would repeat the source chain.
        Err(e) => anyhow::bail!("{e}"),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn enroll_takes_server_token_and_an_optional_identity_dir() {
        let cli = Cli::try_parse_from([
            "airlock",
            "enroll",
            "--server",
            "https://s:7443",
            "--token",
            "T",
            "--identity-dir",
            "/tmp/id",
        ])
        .unwrap();
        let Command::Enroll(a) = cli.cmd else {
            panic!("not enroll")
        };
        assert_eq!(
            (a.server.as_str(), a.token.as_str()),
            ("https://s:7443", "T")
        );
        assert_eq!(
            a.identity_dir.as_deref(),
            Some(std::path::Path::new("/tmp/id"))
        );
    }
}
