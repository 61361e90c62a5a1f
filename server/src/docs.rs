//! The man pages (section 8) and shell completions of `airlock-server`, rendered from its clap
//! definition by `airlock_cli_support::docs`. `airlock-server __generate-docs DIR` writes them
//! (`cargo xtask man` runs it).
use std::path::{Path, PathBuf};

use airlock_cli_support::docs::{self, DocsError, Program, Section};
use clap::CommandFactory as _;

/// `airlock-server`, as documented.
pub fn program() -> Program {
    Program::new(crate::cli::Cli::command(), Section::Admin)
}

/// Writes the man pages and completions of `airlock-server` under `out` (see
/// `airlock_cli_support::docs::generate`); returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, DocsError> {
    docs::generate(&[program()], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_cli_support::docs::{Shell, completion, man_pages};

    /// Every subcommand of the definition, so that a new one is checked without editing here.
    fn subcommands() -> Vec<String> {
        let names: Vec<String> = crate::cli::Cli::command()
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n == "serve") && names.len() >= 6,
            "{names:?}"
        );
        names
    }

    fn page(file: &str) -> String {
        man_pages(&program())
            .into_iter()
            .find(|p| p.file_name == file)
            .unwrap_or_else(|| panic!("no page {file}"))
            .roff
    }

    #[test]
    fn server_man_pages_name_every_subcommand_and_each_has_its_own_page() {
        let top = page("airlock-server.8");
        assert!(top.contains(".TH airlock-server 8"), "{top}");
        for sub in subcommands() {
            assert!(
                top.contains(&format!("airlock\\-server\\-{sub}(8)")),
                "{sub} not listed"
            );
            page(&format!("airlock-server-{sub}.8"));
        }
        // Nested subcommands get pages, and the global --dir shows on the subcommands' pages.
        let enroll = page("airlock-server-hosts-enroll.8");
        assert!(enroll.contains("\\-\\-dir"), "{enroll}");
        assert!(enroll.contains("AIRLOCK_SERVER_DIR"), "{enroll}");
        assert!(top.contains("AIRLOCK_LOG_FORMAT"), "{top}");
    }

    #[test]
    fn server_completions_offer_every_subcommand_in_each_shell() {
        let bash = completion(&program(), Shell::Bash);
        for sub in subcommands() {
            assert!(bash.contains(&format!(",{sub})")), "{sub} missing");
        }
        for shell in [Shell::Zsh, Shell::Fish] {
            let script = completion(&program(), shell);
            for sub in subcommands() {
                assert!(script.contains(&sub), "{shell}: {sub} missing");
            }
        }
    }
}
