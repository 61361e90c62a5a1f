//! The `audit:` section: how long the collector keeps hosts' audit records.
use std::time::Duration;

use airlock_policy::values::DurationRule;
use airlock_policy::yaml::Node;

use super::model::Audit;
use super::parse::Reader;

const AUDIT_KEYS: &[&str] = &["retention"];

/// Retention: days or hours (the prune runs hourly), up to a hundred years.
const RETENTION: DurationRule = DurationRule {
    units: &[('d', 86_400), ('h', 3600)],
    max: Duration::from_secs(100 * 365 * 86_400),
    expected: "a number with a unit h or d: 90d, 365d, 12h",
};

impl Reader<'_> {
    /// `audit: { retention }`; without `retention`, records are kept forever.
    pub(super) fn audit(&mut self, node: &Node) -> Audit {
        let Some(f) = self.mapping(node, "audit", AUDIT_KEYS) else {
            return Audit::default();
        };
        Audit {
            retention: f
                .get("retention")
                .and_then(|n| self.duration(n, "audit.retention", &RETENTION)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{ConfigError, parse};

    const PRINCIPALS: &str = "principals:\n  alice: { groups: [sre] }\n";

    #[test]
    fn retention_is_read_and_defaults_to_forever() {
        let c = parse(&format!("audit:\n  retention: 90d\n{PRINCIPALS}"), "s.yaml").unwrap();
        assert_eq!(c.audit.retention, Some(Duration::from_secs(90 * 86_400)));
        let c = parse(PRINCIPALS, "s.yaml").unwrap();
        assert_eq!(c.audit.retention, None);
    }

    #[test]
    fn a_bad_retention_is_reported_where_it_is() {
        let src = format!("audit:\n  retention: 90\n  keep: yes\n{PRINCIPALS}");
        let Err(ConfigError::Invalid(d)) = parse(&src, "s.yaml") else {
            panic!("accepted");
        };
        let e: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e.iter()
                .any(|m| m.starts_with("s.yaml:2:14: audit.retention:")),
            "{e:#?}"
        );
        assert!(e.iter().any(|m| m.starts_with("s.yaml:3:3:")), "{e:#?}");
    }
}
