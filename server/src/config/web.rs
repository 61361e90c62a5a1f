//! The `web:` section: the approval page's address, session length and OIDC sign-in.
use std::collections::BTreeMap;
use std::time::Duration;

use airlock_policy::values::{DurationRule, check_name};
use airlock_policy::yaml::Node;

use super::model::{Oidc, Web};
use super::parse::Reader;
use super::problem::ConfigProblem;
use super::values::GROUP_NAME;

const WEB_KEYS: &[&str] = &["public_url", "session", "oidc"];
const OIDC_KEYS: &[&str] = &[
    "issuer",
    "client_id",
    "client_secret_file",
    "principal_claim",
    "groups_claim",
    "groups",
];

/// Default sign-in lifetime.
pub(crate) const DEFAULT_SESSION: Duration = Duration::from_secs(8 * 3600);

/// Sessions last from a minute to a week.
const SESSION: DurationRule = DurationRule {
    units: &[('d', 86_400), ('h', 3600), ('m', 60)],
    max: Duration::from_secs(7 * 86_400),
    expected: "a number with a unit m, h or d, at most 7d: 30m, 8h, 1d",
};

impl Reader<'_> {
    /// `web:`; `http_listen` must be set for the page to be served.
    pub(super) fn web(&mut self, node: &Node, has_http: bool) -> Option<Web> {
        let f = self.mapping(node, "web", WEB_KEYS)?;
        if !has_http {
            self.err(node.pos, "web", ConfigProblem::WebNeedsHttpListen);
        }
        let url = self.required_string(&f, "web", "public_url");
        let public_url = url.and_then(|t| match http_url(&t.text) {
            Some(u) => Some(u),
            None => {
                self.err(
                    t.pos,
                    "web.public_url",
                    ConfigProblem::BadPageUrl { found: t.text },
                );
                None
            }
        });
        let mut session = DEFAULT_SESSION;
        if let Some(n) = f.get("session")
            && let Some(d) = self.duration(n, "web.session", &SESSION)
        {
            if d < Duration::from_secs(60) {
                self.err(n.pos, "web.session", ConfigProblem::SessionTooShort);
            } else {
                session = d;
            }
        }
        let oidc = f.get("oidc").and_then(|n| self.oidc(n));
        if f.get("oidc").is_some() && oidc.is_none() {
            return None;
        }
        Some(Web {
            public_url: public_url?,
            session,
            oidc,
        })
    }

    fn oidc(&mut self, node: &Node) -> Option<Oidc> {
        let field = "web.oidc";
        let f = self.mapping(node, field, OIDC_KEYS)?;
        let issuer = self.required_string(&f, field, "issuer");
        let issuer = issuer.and_then(|t| match http_url(&t.text) {
            Some(u) => Some(u),
            None => {
                self.err(
                    t.pos,
                    "web.oidc.issuer",
                    ConfigProblem::BadPageUrl { found: t.text },
                );
                None
            }
        });
        let client_id = self.required_string(&f, field, "client_id");
        let secret = self.optional_string(&f, field, "client_secret_file");
        let principal_claim = self
            .optional_string(&f, field, "principal_claim")
            .unwrap_or_else(|| "email".into());
        let groups_claim = self
            .optional_string(&f, field, "groups_claim")
            .unwrap_or_else(|| "groups".into());
        let mut groups = BTreeMap::new();
        if let Some(n) = f.get("groups") {
            for (k, v) in self.entries(n, "web.oidc.groups").unwrap_or_default() {
                let vf = format!("web.oidc.groups.{}", k.text);
                if let Some(t) = self.string(v, &vf) {
                    match check_name(&t.text, &GROUP_NAME) {
                        Ok(()) => {
                            groups.insert(k.text, t.text);
                        }
                        Err(e) => self.err(t.pos, &vf, e),
                    }
                }
            }
        }
        Some(Oidc {
            issuer: issuer?,
            client_id: client_id?.text,
            client_secret_file: secret.map(std::path::PathBuf::from),
            principal_claim,
            groups_claim,
            groups,
        })
    }
}

/// `http(s)://host[:port][/path]` without a trailing slash, or `None` when it is not one.
fn http_url(s: &str) -> Option<String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || s.contains(['?', '#', ' ']) || host.contains('@') {
        return None;
    }
    Some(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, parse};

    const PRINCIPALS: &str = "principals:\n  alice: { groups: [sre] }\n";

    fn errors(src: &str) -> Vec<String> {
        match parse(src, "server.yaml") {
            Ok(c) => panic!("parsed: {c:?}"),
            Err(ConfigError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
            Err(e) => panic!("not invalid: {e}"),
        }
    }

    #[test]
    fn the_web_section_is_read_with_its_defaults() {
        let src = format!(
            "http_listen: 127.0.0.1:7480\nweb:\n  public_url: https://airlock.example.com/\n  \
             oidc:\n    issuer: https://idp.example.com\n    client_id: airlock\n    \
             groups: {{ oncall: sre }}\n{PRINCIPALS}"
        );
        let c = parse(&src, "server.yaml").unwrap();
        let w = c.web.unwrap();
        assert_eq!(w.public_url, "https://airlock.example.com");
        assert_eq!(w.session, super::DEFAULT_SESSION);
        let o = w.oidc.unwrap();
        assert_eq!(
            (o.principal_claim.as_str(), o.groups_claim.as_str()),
            ("email", "groups")
        );
        assert_eq!(o.groups.get("oncall").map(String::as_str), Some("sre"));
        assert_eq!(o.client_secret_file, None);
    }

    #[test]
    fn web_section_errors_say_where_and_what() {
        let src = format!(
            "web:\n  public_url: ftp://airlock\n  session: 10s\n  oidc:\n    issuer: https://u:p@idp\n    \
             groups: {{ oncall: \"SRE!\" }}\n{PRINCIPALS}"
        );
        let e = errors(&src);
        let want = [
            "server.yaml:2:3: web: the web page is served on the HTTP listener: set http_listen too",
            "server.yaml:2:15: web.public_url: \"ftp://airlock\": expected http://HOST[:PORT][/PATH]",
            "server.yaml:3:12: web.session:",
            "server.yaml:5:5: web.oidc: missing required key \"client_id\"",
            "server.yaml:5:13: web.oidc.issuer: \"https://u:p@idp\": expected",
            "server.yaml:6:23: web.oidc.groups.oncall: invalid group name",
        ];
        assert_eq!(e.len(), want.len(), "{e:#?}");
        for (got, w) in e.iter().zip(want) {
            assert!(got.starts_with(w), "{got:?} does not start with {w:?}");
        }
    }

    #[test]
    fn a_route_taking_web_votes_needs_the_web_section() {
        let src = format!(
            "{PRINCIPALS}routes:\n  - name: d\n    approvers: [sre]\n    channels: [cli, web]\n"
        );
        assert_eq!(
            errors(&src),
            [
                "server.yaml:6:21: routes[0].channels[1]: channel web needs a top-level `web:` section"
            ]
        );
    }
}
