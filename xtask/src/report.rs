//! Counting results: cargo's `test result:` lines, the e2e binary's `PASS`/`FAIL`/`SKIP` lines and
//! its `e2e: N passed, M failed[, K skipped]` summary, and the per-tier table printed at the end.
use crate::util::fmt_dur;
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// `name: why` of every failure (including harness-level ones).
    pub failures: Vec<String>,
    pub skips: Vec<String>,
    /// The e2e binary's own summary, when it printed one.
    pub summary: Option<(u64, u64, u64)>,
}

impl Tally {
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failed += 1;
        self.failures.push(what.into());
    }
    pub fn skip(&mut self, what: impl Into<String>) {
        self.skipped += 1;
        self.skips.push(what.into());
    }
    /// Add another tally, naming its entries after `tier` (unless they already are).
    pub fn add(&mut self, tier: &str, o: &Tally) {
        let name = |m: &String| {
            if m.starts_with(tier) {
                m.clone()
            } else {
                format!("{tier}: {m}")
            }
        };
        self.passed += o.passed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.failures.extend(o.failures.iter().map(name));
        self.skips.extend(o.skips.iter().map(name));
    }

    /// Feed one line of e2e output. Returns true when it was a result or summary line.
    pub fn e2e_line(&mut self, line: &str) -> bool {
        let l = line.trim();
        if l.starts_with("PASS ") {
            self.passed += 1;
        } else if let Some(rest) = l.strip_prefix("FAIL ") {
            self.failed += 1;
            self.failures.push(rest.trim().to_string());
        } else if let Some(rest) = l.strip_prefix("SKIP ") {
            self.skipped += 1;
            self.skips.push(rest.trim().to_string());
        } else if let Some(s) = parse_e2e_summary(l) {
            self.summary = Some(s);
        } else {
            return false;
        }
        true
    }

    /// After an e2e run: reconcile the line counts with its summary line and exit status.
    /// `who` names the run in harness-level failures (e.g. "host", "guest 6.12").
    pub fn finish_e2e(&mut self, who: &str, exit_ok: bool) {
        match self.summary {
            None => self.fail(format!(
                "{who}: the e2e binary printed no `e2e: N passed, M failed` summary"
            )),
            Some((p, f, s)) => {
                if (p, f, s) != (self.passed, self.failed, self.skipped) {
                    println!(
                        "xtask: warning: {who}: counted {}/{}/{} PASS/FAIL/SKIP lines but the summary says {p}/{f}/{s}; using the summary",
                        self.passed, self.failed, self.skipped
                    );
                    self.passed = p;
                    self.failed = f.max(self.failures.len() as u64);
                    self.skipped = s;
                }
            }
        }
        if !exit_ok && self.failed == 0 {
            self.fail(format!(
                "{who}: the e2e binary exited non-zero without reporting a failure"
            ));
        }
        if exit_ok && self.failed > 0 && self.summary.is_some_and(|(_, f, _)| f > 0) {
            println!("xtask: warning: {who}: the e2e binary reported failures but exited 0");
        }
    }

    pub fn counts(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        s
    }
}

/// `e2e: 12 passed, 0 failed, 3 skipped` → (12, 0, 3).
fn parse_e2e_summary(l: &str) -> Option<(u64, u64, u64)> {
    let rest = l.strip_prefix("e2e:")?;
    let (mut p, mut f, mut s) = (None, None, 0);
    for part in rest.split(',') {
        let mut it = part.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        match it.next()? {
            "passed" => p = Some(n),
            "failed" => f = Some(n),
            "skipped" => s = n,
            _ => return None,
        }
    }
    Some((p?, f?, s))
}

/// Feed one line of `cargo test` stdout: `test result: ok. 5 passed; 0 failed; 1 ignored; ...`.
pub fn cargo_test_line(t: &mut Tally, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        if let Some(name) = line.trim().strip_prefix("test ")
            && let Some(name) = name.strip_suffix(" ... FAILED")
        {
            t.failures.push(format!("unit: {name}"));
        }
        return;
    };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        // "ok. 5 passed" / "FAILED. 1 passed" / "2 failed" / "1 ignored"
        let (n, what) = match words.as_slice() {
            [_, n, what] | [n, what] => (n, what),
            _ => continue,
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match *what {
            "passed" => t.passed += n,
            "failed" => t.failed += n,
            "ignored" => t.skipped += n,
            _ => {}
        }
    }
}

/// One row of the final table.
pub struct Row {
    pub name: String,
    pub status: String,
    pub time: Duration,
}

pub fn print_table(rows: &[Row], total: &Tally) {
    println!("\n==================== xtask summary ====================");
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in rows {
        println!("  {:w$}  {:>8}  {}", r.name, fmt_dur(r.time), r.status);
    }
    if !total.failures.is_empty() {
        println!("failures:");
        for f in &total.failures {
            println!("  FAIL {f}");
        }
    }
    if !total.skips.is_empty() {
        println!("skips:");
        for s in &total.skips {
            println!("  SKIP {s}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2e_lines_and_summary() {
        let mut t = Tally::default();
        for l in [
            "PASS a",
            "  FAIL b: nope",
            "SKIP c: no bpf",
            "noise",
            "e2e: 1 passed, 1 failed, 1 skipped",
        ] {
            t.e2e_line(l);
        }
        assert_eq!((t.passed, t.failed, t.skipped), (1, 1, 1));
        assert_eq!(t.summary, Some((1, 1, 1)));
        t.finish_e2e("x", false);
        assert_eq!(t.failed, 1);
        assert_eq!(t.failures, vec!["b: nope".to_string()]);
    }

    #[test]
    fn missing_summary_is_a_failure() {
        let mut t = Tally::default();
        t.finish_e2e("guest 6.1", true);
        assert_eq!(t.failed, 1);
        let mut t = Tally::default();
        t.e2e_line("e2e: 0 passed, 0 failed");
        t.finish_e2e("host", false);
        assert_eq!(t.failed, 1);
    }

    #[test]
    fn cargo_lines() {
        let mut t = Tally::default();
        cargo_test_line(
            &mut t,
            "test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        );
        cargo_test_line(
            &mut t,
            "test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        cargo_test_line(&mut t, "test foo::bar ... FAILED");
        assert_eq!((t.passed, t.failed, t.skipped), (6, 3, 2));
        assert_eq!(t.failures, vec!["unit: foo::bar".to_string()]);
    }

    #[test]
    fn summary_parse() {
        assert_eq!(
            parse_e2e_summary("e2e: 3 passed, 0 failed"),
            Some((3, 0, 0))
        );
        assert_eq!(
            parse_e2e_summary("e2e: 3 passed, 2 failed, 1 skipped"),
            Some((3, 2, 1))
        );
        assert_eq!(parse_e2e_summary("e2e: starting"), None);
    }
}
