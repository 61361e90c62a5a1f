//! Man pages and shell completions rendered from a program's clap definition, so that they
//! cannot drift from `--help`.
//!
//! [`generate`] writes, under an output directory:
//! - `man/NAME.S` for each program and `man/NAME-SUB.S` (`NAME-SUB-SUBSUB.S`, …) for each of its
//!   subcommands, `S` being the program's [`Section`];
//! - `completions/bash/NAME`, `completions/zsh/_NAME` and `completions/fish/NAME.fish`, the
//!   names bash-completion's loader, zsh's `$fpath` and fish look for.
//!
//! The binaries expose it as the hidden command line `PROG __generate-docs DIR`
//! ([`hidden_command`]), which `cargo xtask man` runs after building them.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use clap_complete::Shell;

use crate::logging::{FILTER_ENV, FORMAT_ENV, JOURNAL_ENV};

/// The first argument that makes a program write its documentation ([`hidden_command`]).
pub const GENERATE_DOCS: &str = "__generate-docs";

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The manual section a program's pages belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// 1: user commands (`airlock`).
    Commands,
    /// 8: system administration commands and daemons (`airlockd`, `airlock-server`).
    Admin,
}

impl Section {
    /// The section's number, the man page's file extension.
    pub fn number(self) -> &'static str {
        match self {
            Self::Commands => "1",
            Self::Admin => "8",
        }
    }
}

/// One program to document.
#[derive(Debug, Clone)]
pub struct Program {
    /// Its clap definition; its name is the program's name.
    pub command: clap::Command,
    /// Where its pages go in the manual.
    pub section: Section,
}

impl Program {
    /// A program named `command.get_name()`.
    pub fn new(command: clap::Command, section: Section) -> Self {
        Self { command, section }
    }

    /// The program's name (the binary's).
    pub fn name(&self) -> &str {
        self.command.get_name()
    }
}

/// One rendered man page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// `NAME.S` or `NAME-SUB.S`.
    pub file_name: String,
    /// The page's roff source.
    pub roff: String,
}

/// Why the documentation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DocsError {
    /// Creating a directory or writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// Renders the program's page and one page per subcommand, depth first, hidden ones left out
/// (as clap_mangen's own `generate_to` does). The program's page gets an ENVIRONMENT section
/// for the logging variables every airlock program reads.
pub fn man_pages(program: &Program) -> Vec<Page> {
    // `help` is not a command anybody needs a page for.
    let mut cmd = program.command.clone().disable_help_subcommand(true);
    // Builds the subcommands' display names (`airlock-approve`) the file names and titles use.
    cmd.build();
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let head = Head {
        section: program.section,
        source,
        date: page_date(),
    };
    let mut pages = Vec::new();
    collect_pages(&cmd, &head, true, &mut pages);
    pages
}

/// What every page of one program carries in its `.TH` line.
struct Head {
    section: Section,
    source: String,
    date: String,
}

/// The pages' date, `YYYY-MM-DD`: `SOURCE_DATE_EPOCH`'s day when set (reproducible builds),
/// else today's. Never empty: clap_mangen writes an empty date as nothing at all, which shifts
/// the `.TH` arguments after it (the source would show as the date).
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    civil_date(secs / 86_400)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_date(days: u64) -> String {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn collect_pages(cmd: &clap::Command, head: &Head, top: bool, pages: &mut Vec<Page>) {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(head.section.number())
        .date(&head.date)
        .source(&head.source)
        .manual("airlock");
    let mut buf = Vec::new();
    man.render(&mut buf)
        .expect("rendering into a Vec does not fail");
    let mut roff = String::from_utf8(buf).expect("clap_mangen renders UTF-8 from UTF-8 input");
    if top {
        insert_environment(&mut roff);
    }
    pages.push(Page {
        file_name: man.get_filename(),
        roff,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, head, false, pages);
    }
}

/// Adds the ENVIRONMENT section before VERSION (the order man-pages(7) recommends puts it
/// after the options), or at the end.
fn insert_environment(roff: &mut String) {
    let mut env = roff::Roff::new();
    env.control("SH", ["ENVIRONMENT"]);
    let vars = [
        (
            FILTER_ENV,
            "Which log lines to write, in the filter syntax of Rust's tracing \
             (info, warn, airlock_server=debug,info, ...). Default: info.",
        ),
        (
            FORMAT_ENV,
            "text (default) or json: one JSON object per line with timestamp, level, \
             target, message and the event's fields.",
        ),
        (
            JOURNAL_ENV,
            "Set by systemd when standard error is the journal: text lines then carry no \
             timestamp (the journal adds its own). Text is coloured only on a terminal.",
        ),
    ];
    for (name, what) in vars {
        env.control("TP", []);
        env.text([roff::bold(name)]);
        env.text([roff::roman(what)]);
    }
    // `render` starts with the preamble defining the apostrophe string; the page has it.
    let preamble_len = roff::Roff::new().render().len();
    let section = &env.render()[preamble_len..];
    match roff.find("\n.SH VERSION") {
        Some(at) => roff.insert_str(at + 1, section),
        None => roff.push_str(section),
    }
}

/// The completion script of `program` for `shell`.
pub fn completion(program: &Program, shell: Shell) -> String {
    let mut cmd = program.command.clone();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, program.name(), &mut buf);
    let script = String::from_utf8(buf).expect("clap_complete renders UTF-8 from UTF-8 input");
    match shell {
        Shell::Bash => fix_bash_hyphenated_name(script, program.name()),
        _ => script,
    }
}

/// Works around clap_complete's bash bug for program names with a hyphen (clap-rs/clap#6421,
/// open in 4.6.12): the loop walking the words spells `airlock-server hosts` as
/// `airlock__server__subcmd__hosts`, but the `case` arms holding each subcommand's options
/// escape the hyphen as the subcommand separator (`airlock__subcmd__server__subcmd__hosts`),
/// so nothing completes after a subcommand. Respelling the arms' prefix the loop's way fixes
/// it; once clap_complete is fixed the wrong spelling no longer occurs and this does nothing.
fn fix_bash_hyphenated_name(script: String, name: &str) -> String {
    if !name.contains('-') {
        return script;
    }
    let wrong = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", name.replace('-', "__"));
    script.replace(&wrong, &right)
}

/// The file name `shell` looks for when completing `name`.
pub fn completion_file_name(shell: Shell, name: &str) -> String {
    match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_string(),
    }
}

/// Writes every program's man pages to `out/man` and completions to `out/completions/SHELL`
/// (creating the directories; files of the same names are replaced, others left alone).
/// Returns the files written.
pub fn generate(programs: &[Program], out: &Path) -> Result<Vec<PathBuf>, DocsError> {
    let mut written = Vec::new();
    let man_dir = out.join("man");
    create_dir(&man_dir)?;
    for program in programs {
        for page in man_pages(program) {
            written.push(write(&man_dir.join(&page.file_name), &page.roff)?);
        }
    }
    for shell in SHELLS {
        let dir = out.join("completions").join(shell.to_string());
        create_dir(&dir)?;
        for program in programs {
            let path = dir.join(completion_file_name(shell, program.name()));
            written.push(write(&path, &completion(program, shell))?);
        }
    }
    Ok(written)
}

fn create_dir(dir: &Path) -> Result<(), DocsError> {
    std::fs::create_dir_all(dir).map_err(|source| DocsError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<PathBuf, DocsError> {
    std::fs::write(path, text).map_err(|source| DocsError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

/// Runs `PROG __generate-docs DIR` if that is the command line (`args` without the program
/// name): calls `generate(DIR)`, prints each file written, and returns the exit code (2 on a
/// usage or write error). Returns `None` for every other command line.
///
/// It is matched before clap parses, not declared as a hidden clap subcommand: clap_complete
/// offers hidden subcommands in its scripts, and `airlockd` takes no subcommands at all (one
/// would change how its arguments parse).
pub fn hidden_command(
    prog: &str,
    args: impl IntoIterator<Item = OsString>,
    generate: impl FnOnce(&Path) -> Result<Vec<PathBuf>, DocsError>,
) -> Option<ExitCode> {
    let mut args = args.into_iter();
    if args.next()? != GENERATE_DOCS {
        return None;
    }
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("{prog}: usage: {prog} {GENERATE_DOCS} DIR");
        return Some(ExitCode::from(2));
    };
    Some(match generate(Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{prog}: {e}");
            ExitCode::from(2)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn sample() -> Program {
        Program::new(
            Command::new("tool")
                .version("1.2.3")
                .about("Does tool things")
                .subcommand(
                    Command::new("grant")
                        .about("Grant one")
                        .arg(Arg::new("id").required(true))
                        .subcommand(Command::new("forever").about("For good")),
                )
                .subcommand(Command::new("secret").hide(true))
                .arg(
                    Arg::new("state-dir")
                        .long("state-dir")
                        .env("TOOL_STATE_DIR")
                        .help("Where state lives"),
                ),
            Section::Admin,
        )
    }

    #[test]
    fn page_dates_are_calendar_days() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_454), "2026-01-01");
    }

    #[test]
    fn man_pages_cover_nested_subcommands_but_not_hidden_ones_or_help() {
        let names: Vec<String> = man_pages(&sample())
            .into_iter()
            .map(|p| p.file_name)
            .collect();
        assert_eq!(names, ["tool.8", "tool-grant.8", "tool-grant-forever.8"]);
    }

    #[test]
    fn the_program_page_documents_the_log_variables_and_flag_environment() {
        let pages = man_pages(&sample());
        let top = &pages[0].roff;
        assert!(top.starts_with(".ie"), "one apostrophe preamble, first");
        assert_eq!(top.matches(".ie \\n(.g").count(), 1, "{top}");
        let env = top.find(".SH ENVIRONMENT").expect("ENVIRONMENT");
        assert!(env < top.find(".SH VERSION").expect("VERSION"), "{top}");
        for var in [
            "AIRLOCK_LOG",
            "AIRLOCK_LOG_FORMAT",
            "JOURNAL_STREAM",
            "TOOL_STATE_DIR",
        ] {
            assert!(top.contains(var), "{var} missing:\n{top}");
        }
        // Title, section, date, source, manual: five arguments, none of them empty.
        let th = top.lines().find(|l| l.starts_with(".TH ")).expect(".TH");
        assert_eq!(
            th,
            format!(".TH tool 8 {} \"tool 1.2.3\" airlock", page_date())
        );
        assert!(
            !pages[1].roff.contains(".SH ENVIRONMENT"),
            "only on the program's page"
        );
        assert!(
            pages[1].roff.contains("\"tool 1.2.3\""),
            "subcommand pages too"
        );
    }

    #[test]
    fn generate_writes_pages_and_completions_under_their_conventional_names() {
        let out = tempfile::tempdir().unwrap();
        let written = generate(&[sample()], out.path()).unwrap();
        let rel: Vec<String> = written
            .iter()
            .map(|p| p.strip_prefix(out.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "man/tool.8",
                "man/tool-grant.8",
                "man/tool-grant-forever.8",
                "completions/bash/tool",
                "completions/zsh/_tool",
                "completions/fish/tool.fish",
            ]
        );
        let bash = std::fs::read_to_string(out.path().join("completions/bash/tool")).unwrap();
        assert!(
            bash.contains("grant") && bash.contains("--state-dir"),
            "{bash}"
        );
    }

    /// What bash offers for `words` (the last one being completed), with the script `generate`
    /// wrote for `name` sourced.
    fn bash_complete(script: &Path, name: &str, words: &[&str]) -> String {
        let function = format!("_{}", name.replace('-', "__"));
        let cword = words.len() - 1;
        let prog = format!(
            "source \"$1\"; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             {function} {name} \"${{COMP_WORDS[{cword}]}}\" \"${{COMP_WORDS[{prev}]}}\"; \
             echo \"${{COMPREPLY[*]}}\"",
            words = words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            prev = cword - 1,
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &prog, "bash"])
            .arg(script)
            .output()
            .expect("running bash");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn bash_completes_subcommand_flags_of_a_hyphenated_program_name() {
        let mut program = sample();
        program.command = program.command.name("my-tool");
        let out = tempfile::tempdir().unwrap();
        generate(&[program], out.path()).unwrap();
        let script = out.path().join("completions/bash/my-tool");
        assert_eq!(
            bash_complete(&script, "my-tool", &["my-tool", "gr"]),
            "grant"
        );
        // What clap_complete alone gets wrong (clap-rs/clap#6421): after the subcommand.
        let after = bash_complete(&script, "my-tool", &["my-tool", "grant", "f"]);
        assert_eq!(after, "forever");
    }

    #[test]
    fn hidden_command_only_answers_its_own_command_line() {
        let called = |_: &Path| -> Result<Vec<PathBuf>, DocsError> { panic!("not this one") };
        assert!(hidden_command("tool", ["status".into()], called).is_none());
        assert!(hidden_command("tool", Vec::<OsString>::new(), called).is_none());
        let usage = hidden_command("tool", [GENERATE_DOCS.into()], called);
        assert_eq!(usage, Some(ExitCode::from(2)));
        let out = tempfile::tempdir().unwrap();
        let mut got = None;
        let code = hidden_command(
            "tool",
            [GENERATE_DOCS.into(), out.path().as_os_str().to_owned()],
            |dir| {
                got = Some(dir.to_path_buf());
                Ok(Vec::new())
            },
        );
        assert_eq!(code, Some(ExitCode::SUCCESS));
        assert_eq!(got.as_deref(), Some(out.path()));
    }
}
