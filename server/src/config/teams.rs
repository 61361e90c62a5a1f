//! The `teams:` section: where the Microsoft Teams channel's Workflows webhook URL is kept.
use airlock_policy::yaml::Node;

use super::model::Teams;
use super::parse::Reader;

const TEAMS_KEYS: &[&str] = &["webhook_url_file"];

impl Reader<'_> {
    /// `teams: { webhook_url_file }`. The file itself is read by `crate::teams::check` (at
    /// start, on reload, by `config check`): parsing never touches the disk.
    pub(super) fn teams(&mut self, node: &Node) -> Option<Teams> {
        let f = self.mapping(node, "teams", TEAMS_KEYS)?;
        let file = self.required_string(&f, "teams", "webhook_url_file")?;
        Some(Teams {
            webhook_url_file: std::path::PathBuf::from(file.text),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Channel, ConfigError, Teams, parse};

    const PRINCIPALS: &str = "principals:\n  alice: { groups: [sre] }\n";
    const TEAMS_ROUTE: &str =
        "routes:\n  - name: d\n    approvers: [sre]\n    channels: [cli, teams, web]\n";
    const WEB: &str =
        "http_listen: \"127.0.0.1:7480\"\nweb:\n  public_url: https://airlock.example.com\n";

    fn errors(src: &str) -> Vec<String> {
        match parse(src, "server.yaml") {
            Ok(c) => panic!("parsed: {c:?}"),
            Err(ConfigError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
            Err(e) => panic!("not invalid: {e}"),
        }
    }

    #[test]
    fn teams_section_is_read_and_a_route_with_web_may_name_it() {
        let src = format!("{WEB}teams:\n  webhook_url_file: teams.url\n{PRINCIPALS}{TEAMS_ROUTE}");
        let c = parse(&src, "server.yaml").unwrap();
        assert_eq!(
            c.teams,
            Some(Teams {
                webhook_url_file: "teams.url".into()
            })
        );
        assert_eq!(
            c.routes[0].channels,
            [Channel::Cli, Channel::Teams, Channel::Web]
        );
    }

    #[test]
    fn a_teams_route_without_the_teams_section_is_an_error_at_the_channel() {
        // Line 9 is the route's `channels:`; column 21 its second entry.
        assert_eq!(
            errors(&format!("{WEB}{PRINCIPALS}{TEAMS_ROUTE}")),
            [
                "server.yaml:9:21: routes[0].channels[1]: channel teams needs a top-level `teams:` section"
            ]
        );
    }

    #[test]
    fn a_teams_route_without_the_web_page_is_an_error_since_cards_only_link_to_it() {
        assert_eq!(
            errors(&format!(
                "teams:\n  webhook_url_file: teams.url\n{PRINCIPALS}{TEAMS_ROUTE}"
            )),
            [
                "server.yaml:8:21: routes[0].channels[1]: channel teams needs a top-level `web:` section",
                "server.yaml:8:28: routes[0].channels[2]: channel web needs a top-level `web:` section",
            ]
        );
    }

    #[test]
    fn teams_section_errors_name_the_key() {
        assert_eq!(
            errors(&format!("teams: {{}}\n{PRINCIPALS}")),
            ["server.yaml:1:8: teams: missing required key \"webhook_url_file\""]
        );
        assert_eq!(
            errors(&format!(
                "teams:\n  webhook_url_fle: https://x\n{PRINCIPALS}"
            )),
            [
                "server.yaml:2:3: teams: unknown key \"webhook_url_fle\" (did you mean \"webhook_url_file\"?)",
                "server.yaml:2:3: teams: missing required key \"webhook_url_file\"",
            ]
        );
        assert_eq!(
            errors(&format!("teams: https://x\n{PRINCIPALS}")),
            ["server.yaml:1:8: teams: expected a mapping, found a scalar"]
        );
    }
}
