//! The `slack:` section and `web_only`: the model they parse into, and each error with its
//! exact `file:line:col`.
use super::*;

/// Principals alice (sre) and bob (sre); one route listing slack; then `rest`.
fn with_slack(route_extra: &str, rest: &str) -> String {
    format!(
        "principals:\n  alice: {{ groups: [sre] }}\n  bob: {{ groups: [sre] }}\nroutes:\n  \
         - name: default\n    approvers: [sre]\n    channels: [cli, slack]\n{route_extra}{rest}"
    )
}

fn errors(src: &str) -> Vec<String> {
    match parse(src, "server.yaml") {
        Ok(c) => panic!("parsed: {c:?}"),
        Err(ConfigError::Invalid(d)) => d.iter().map(|d| d.to_string()).collect(),
        Err(e) => panic!("not invalid: {e}"),
    }
}

const SOCKET: &str = "slack:\n  bot_token_file: slack-bot.token\n  app_token_file: slack-app.token\n  channel: C0123ABCD\n  users:\n    U0AAA1111: alice\n    W0BBB2222: bob\n";

#[test]
fn a_socket_mode_section_parses_with_defaults() {
    let c = parse(&with_slack("", SOCKET), "server.yaml").unwrap();
    let s = c.slack.unwrap();
    assert_eq!(s.mode, SlackMode::Socket);
    assert_eq!(s.bot_token_file, std::path::Path::new("slack-bot.token"));
    assert_eq!(
        s.app_token_file.as_deref(),
        Some(std::path::Path::new("slack-app.token"))
    );
    assert_eq!(s.signing_secret_file, None);
    assert_eq!(s.channel, "C0123ABCD");
    assert_eq!(s.api_url, "https://slack.com/api");
    assert_eq!(s.users["U0AAA1111"], "alice");
    assert_eq!(s.users["W0BBB2222"], "bob");
    assert!(!c.routes[0].web_only);
    assert_eq!(c.routes[0].channels, [Channel::Cli, Channel::Slack]);
}

#[test]
fn http_mode_takes_the_signing_secret_and_a_test_api_url() {
    let src = with_slack(
        "",
        "http_listen: 127.0.0.1:7480\nslack:\n  mode: http\n  bot_token_file: b\n  \
         signing_secret_file: s\n  channel: G0123\n  api_url: http://127.0.0.1:9/api/\n",
    );
    let s = parse(&src, "server.yaml").unwrap().slack.unwrap();
    assert_eq!(s.mode, SlackMode::Http);
    assert_eq!(
        s.signing_secret_file.as_deref(),
        Some(std::path::Path::new("s"))
    );
    assert_eq!(s.api_url, "http://127.0.0.1:9/api");
}

#[test]
fn a_route_naming_slack_needs_the_section() {
    assert_eq!(
        errors(&with_slack("", "")),
        [
            "server.yaml:7:21: routes[0].channels[1]: channel slack needs a top-level `slack:` section"
        ]
    );
}

#[test]
fn each_mode_needs_its_credential_and_http_its_listener() {
    let socket = with_slack("", "slack:\n  bot_token_file: b\n  channel: C0123\n");
    assert_eq!(
        errors(&socket),
        [
            "server.yaml:9:3: slack: Socket Mode (the default mode) needs app_token_file (an xapp- token with connections:write)"
        ]
    );
    let http = with_slack(
        "",
        "slack:\n  mode: http\n  bot_token_file: b\n  channel: C0123\n",
    );
    assert_eq!(
        errors(&http),
        ["server.yaml:9:3: slack: mode http needs signing_secret_file (the app's signing secret)"]
    );
    let no_listener = with_slack(
        "",
        "slack:\n  mode: http\n  bot_token_file: b\n  signing_secret_file: s\n  channel: C0123\n",
    );
    assert_eq!(
        errors(&no_listener),
        [
            "server.yaml:9:3: slack: mode http takes Slack's requests on the HTTP listener: set http_listen too"
        ]
    );
}

#[test]
fn bad_values_are_reported_where_they_are() {
    let src = with_slack(
        "",
        "slack:\n  mode: websocket\n  bot_token_file: b\n  app_token_file: a\n  \
         channel: \"#approvals\"\n  api_url: ftp://x\n  users:\n    alice: alice\n    U0CCC3333: alise\n",
    );
    assert_eq!(
        errors(&src),
        [
            "server.yaml:9:9: slack.mode: unknown Slack mode \"websocket\" (expected socket or http)",
            "server.yaml:12:12: slack.channel: channel \"#approvals\": expected a Slack conversation id such as C0123ABCD (not a #name)",
            "server.yaml:13:12: slack.api_url: api_url \"ftp://x\": expected https://… (or http://… for a local test double)",
            "server.yaml:15:5: slack.users: \"alice\": expected a Slack user id such as U0123ABCD",
            "server.yaml:16:16: slack.users.U0CCC3333: unknown principal \"alise\" (did you mean \"alice\"?)",
        ]
    );
}

#[test]
fn web_only_with_slack_needs_the_web_page() {
    let src = with_slack("    web_only: true\n", SOCKET);
    assert_eq!(
        errors(&src),
        [
            "server.yaml:7:15: routes[0].channels: slack (web_only) sends approvers to the web page to decide: add web to this route's channels",
            "server.yaml:8:15: routes[0].web_only: web_only links Slack messages to the web page: add a top-level `web:` section",
        ]
    );
    let with_web = with_slack(
        "    web_only: true\n",
        &format!(
            "http_listen: 127.0.0.1:7480\nweb:\n  public_url: https://airlock.example.com\n{SOCKET}"
        ),
    )
    .replace("[cli, slack]", "[cli, slack, web]");
    let c = parse(&with_web, "server.yaml").unwrap();
    assert!(c.routes[0].web_only);
    assert_eq!(
        c.web.unwrap().request_url("01J"),
        "https://airlock.example.com/requests/01J"
    );
    // A quoted "true" is a string, not the boolean.
    let quoted = with_slack("    web_only: \"true\"\n", SOCKET);
    assert_eq!(errors(&quoted).len(), 1, "{:?}", errors(&quoted));
}
