//! `airlock-server init --dir DIR [--listen ADDR] [--name DNS]…`: a new server directory.
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// Arguments of `airlock-server init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The directory to create (or an empty existing one).
    #[arg(
        long,
        env = "AIRLOCK_SERVER_DIR",
        default_value = "/var/lib/airlock-server"
    )]
    pub dir: PathBuf,
    /// Address the server will listen on (written to server.yaml).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Extra DNS names or IP addresses hosts reach the server by (the certificate always
    /// names localhost, 127.0.0.1, ::1 and the listen address).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
}

/// Creates the CA, the server certificate and a commented config.
pub fn run(a: InitArgs) -> anyhow::Result<ExitCode> {
    let cfg = super::config_path(&a.dir);
    if cfg.exists() {
        bail!(
            "{} exists: this directory is already initialised (nothing changed)",
            cfg.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&a.dir)
        .with_context(|| format!("creating {}", a.dir.display()))?;
    let addr: std::net::SocketAddr = a
        .listen
        .parse()
        .with_context(|| format!("--listen {:?}: expected IP:PORT", a.listen))?;
    let mut names = a.names.clone();
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    let ca = crate::pki::Ca::create(&a.dir).context("creating the CA")?;
    ca.issue_server(&a.dir, &names)
        .context("issuing the server certificate")?;
    std::fs::write(&cfg, crate::config::template(&a.listen))
        .with_context(|| format!("writing {}", cfg.display()))?;
    println!("initialised {}", a.dir.display());
    println!("  CA:          {}", a.dir.join("ca.pem").display());
    println!(
        "  certificate: {} (for {})",
        a.dir.join("server.pem").display(),
        names.join(", ")
    );
    println!(
        "  config:      {} (edit principals and routes)",
        cfg.display()
    );
    println!("next: airlock-server serve --dir {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}
