//! The man pages and shell completions of `airlock` (section 1) and `airlockd` (section 8),
//! rendered from their clap definitions by `airlock_cli_support::docs`. `airlock
//! __generate-docs DIR` writes both programs' (`cargo xtask man` runs it).
use std::path::{Path, PathBuf};

use airlock_cli_support::docs::{self, DocsError, Program, Section};
use clap::CommandFactory as _;

/// The two programs of this crate, as documented.
pub fn programs() -> [Program; 2] {
    [
        Program::new(crate::cli::Cli::command(), Section::Commands),
        // Named here: the parser itself keeps clap's default name (see `DaemonArgs`).
        Program::new(
            crate::daemon_args::DaemonArgs::command().name("airlockd"),
            Section::Admin,
        ),
    ]
}

/// Writes the man pages and completions of `airlock` and `airlockd` under `out` (see
/// `airlock_cli_support::docs::generate`); returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, DocsError> {
    docs::generate(&programs(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_cli_support::docs::{Shell, completion, man_pages};

    /// Every subcommand of `airlock`'s definition, so that a new one is checked without editing
    /// here.
    fn subcommands() -> Vec<String> {
        let names: Vec<String> = crate::cli::Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        for known in ["run", "approve", "deny", "pending"] {
            assert!(names.iter().any(|n| n == known), "{known}: {names:?}");
        }
        names
    }

    fn page(program: &Program, file: &str) -> String {
        man_pages(program)
            .into_iter()
            .find(|p| p.file_name == file)
            .unwrap_or_else(|| panic!("no page {file}"))
            .roff
    }

    #[test]
    fn airlock_man_pages_name_every_subcommand_and_each_has_its_own_page() {
        let [airlock, _] = programs();
        let top = page(&airlock, "airlock.1");
        for sub in subcommands() {
            assert!(
                top.contains(&format!("airlock\\-{sub}(1)")),
                "{sub} not listed"
            );
            page(&airlock, &format!("airlock-{sub}.1"));
        }
        // Nested subcommands get pages too, and a subcommand's page shows its flags.
        page(&airlock, "airlock-policy-check.1");
        let approve = page(&airlock, "airlock-approve.1");
        assert!(approve.contains("\\-\\-server"), "{approve}");
        assert!(approve.contains("AIRLOCK_TOKEN"), "{approve}");
    }

    #[test]
    fn airlockd_man_page_is_section_8_with_its_flags_and_environment() {
        let [_, airlockd] = programs();
        let pages = man_pages(&airlockd);
        // airlockd, `airlockd config` and `airlockd config check`.
        assert_eq!(
            pages.len(),
            3,
            "{:?}",
            pages.iter().map(|p| &p.file_name).collect::<Vec<_>>()
        );
        page(&airlockd, "airlockd-config-check.8");
        let top = page(&airlockd, "airlockd.8");
        assert!(
            top.starts_with(".ie") && top.contains(".TH airlockd 8"),
            "{top}"
        );
        for flag in [
            "\\-\\-policy",
            "\\-\\-backend",
            "\\-\\-audit\\-spool\\-max",
            "\\-\\-config",
        ] {
            assert!(top.contains(flag), "{flag} missing");
        }
        for var in ["AIRLOCK_POLICY", "AIRLOCK_LOG_FORMAT"] {
            assert!(top.contains(var), "{var} missing");
        }
    }

    #[test]
    fn completions_offer_airlock_subcommands_and_airlockd_flags() {
        let [airlock, airlockd] = programs();
        let bash = completion(&airlock, Shell::Bash);
        for sub in subcommands() {
            assert!(bash.contains(&format!(",{sub})")), "{sub} missing");
        }
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion(&airlockd, shell);
            assert!(script.contains("airlockd"), "{shell}: {script}");
            assert!(script.contains("pin-dir"), "{shell}: {script}");
        }
    }
}
