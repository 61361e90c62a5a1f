//! The commented config `airlock-server init` writes.

/// The listen address `init` writes when given none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

/// The config `init` writes, listening on [`DEFAULT_LISTEN`]. Every example beyond the one
/// admin and the catch-all route is commented out, so a new server runs as is and the operator
/// uncomments what they need.
pub const TEMPLATE: &str = r#"# airlock-server configuration. Check it after editing with:
#   airlock-server config check server.yaml
# (every problem is reported as file:line:column).

# Address the gRPC listener binds (TLS; hosts and approvers connect to it), IP:PORT.
listen: "127.0.0.1:7443"

# Address of the HTTP listener (the web page, Slack's and the webhook's callbacks), IP:PORT. Plain
# HTTP: keep it on loopback or a private address behind a TLS-terminating proxy. Default: none.
# http_listen: "127.0.0.1:7480"

# Address of the Prometheus metrics listener (GET /metrics, plain HTTP, nothing else on it),
# IP:PORT. Read at start; `serve --metrics-listen` overrides it. Default: none.
# metrics_listen: "127.0.0.1:9464"

# Database. Default: the SQLite file airlock.db in the server's directory. Several replicas
# share one PostgreSQL database:
# database: postgres://airlock@db.example.com/airlock

# May a linked host still decide its own requests on its local socket (break-glass)? Such
# decisions are recorded as break-glass and reported to this server. false makes the server
# the only way to decide.
break_glass: true

# The approval page, for routes that list `web` (served on http_listen; put a TLS proxy in
# front). Approvers sign in with single sign-on (OpenID Connect, authorization code + PKCE) or
# with an API token (airlock-server tokens issue NAME). public_url is the page's address as
# browsers reach it: Slack and Teams messages link to it, the provider redirects back to
# PUBLIC_URL/login/oidc/callback (register that), and forms must come from it; an https://
# address makes the session cookie Secure. session: how long a sign-in lasts (default 8h).
# oidc.principal_claim (default email) names the principal; the provider's groups claim
# (groups_claim, default groups) maps to approver groups through oidc.groups, on top of the
# principal's groups below. Someone not listed under principals may vote only through a mapped
# group, and is then taken to be host user NAME for the self-approval rule (NAME@domain).
# client_secret_file (relative to this directory) is left out for a public client.
# web:
#   public_url: https://airlock.example.com
#   session: 8h
#   oidc:
#     issuer: https://login.example.com
#     client_id: airlock
#     client_secret_file: oidc-client.secret
#     groups: { platform-oncall: sre }

# The generic webhook channel, for routes that list `webhook` in their channels: one JSON POST
# per request when it opens, when its reminder or escalation comes due and when its host
# reports the outcome ({"event": "opened", "reminder", "escalated" or "closed", "request":
# {...}}), retried with backoff. Each is signed: header
# X-Airlock-Signature: t=UNIX_SECONDS,v1=HEX where HEX is the lowercase hex HMAC-SHA256, keyed
# with the secret, of "UNIX_SECONDS." followed by the raw body. A receiver recomputes it over
# the bytes it received, compares in constant time and refuses a t more than 300 s from its
# clock. secret_file (relative to this directory) holds the shared secret.
# webhook:
#   url: https://hooks.example.com/airlock
#   secret_file: webhook.secret

# Microsoft Teams, for routes that list `teams`: an Adaptive Card per request when it opens,
# when its reminder or escalation comes due, and when it closes, posted to a Teams Workflows
# webhook ("When a Teams webhook request is received"). Its URL is the credential, so it is
# kept in a file (relative to this directory). Teams cards cannot take clicks: their button
# opens the request on the web page, so a route listing teams needs web: (and http_listen).
# teams:
#   webhook_url_file: teams.url

# Slack, for routes that list `slack`: a message per request in `channel` (a conversation id,
# C...) with its context and the buttons Approve, Approve 15m and Deny (Deny asks for the
# reason in a form); each vote is a reply in the message's thread, and the message is updated
# with the outcome when the request closes. Failed posts are retried while the request is
# pending. The app needs the bot scopes chat:write (and the bot in the channel), and takes
# clicks either by Socket Mode (default: outbound only; an app-level token with
# connections:write) or by HTTP (mode: http; Slack POSTs to /v1/slack/interactivity on
# http_listen, behind your TLS proxy; checked with the app's signing secret). Files are
# relative to this directory. users maps Slack user ids to principals: a click by anyone else
# is refused (the user sees why; every refusal is recorded).
# slack:
#   bot_token_file: slack-bot.token          # xoxb-...
#   app_token_file: slack-app.token          # xapp-..., Socket Mode
#   # mode: http                             # instead of Socket Mode:
#   # signing_secret_file: slack-signing.secret
#   channel: C0123ABCD
#   users:
#     U0123ABCD: alice
#     U0456EFGH: bob

# The audit collector: hosts ship their hash-chained audit records over the link; the server
# verifies each batch (the chain it stored, the host's signed checkpoints, the key the host
# presented first) and stores it. retention: how long stored records and the collector's
# alerts are kept (h or d; deleted hourly, each host's chain goes on from the last deleted
# record). Default: kept forever.
# audit:
#   retention: 90d

# The people who may vote. API tokens are issued to these names
# (airlock-server tokens create NAME). Names: a-z, 0-9, ., _, - and @.
principals:
  admin:
    groups: [admins]
    # Host user names that are this person: they may not approve a request of an agent they
    # launched (as that user, or through sudo). "user" counts on every host, "user@host-glob"
    # on matching hosts only. Without it the server cannot tell who launched what.
    # host_users: [admin, "admin@build-*"]
  # alice:
  #   groups: [sre, dba]
  #   host_users: [alice]
  # bob: { groups: [sre] }
  # carol: { groups: [oncall] }

# Who may vote on which requests. The first route whose match fits a request decides. A
# request that no route matches cannot be decided through the server: it waits on its host
# and times out per its rule's onTimeout. Keep a catch-all route (no match criteria) last.
routes:
  # - name: prod-etc
  #   match:                     # every key optional; all given keys must match;
  #                              # in a list, any entry
  #     hosts: ["web-*"]         # host name globs (the name the host enrolled with)
  #     labels: { env: prod }    # host labels (given at enrolment), all must be equal
  #     agents: [claude]         # agent name globs
  #     rules: ["etc-*"]         # policy rule name globs
  #     operations: [open_write, create]  # exec, map_exec, open_write, create, unlink, rename,
  #                              # truncate, link, chmod, chown, mkdir, rmdir, symlink, setattr
  #     paths: ["/etc/**"]       # target path globs: * within a component, ** across
  #     binaries: ["/usr/bin/kubectl"]  # exec requests only: the binary run
  #   approvers: [sre]           # groups whose members may vote
  #   threshold: 2               # distinct approvals needed (default 1; at most the number
  #                              # of principals in the approver groups); one deny decides
  #   deny_requires_reason: true # default false
  #   reminder: 2m               # remind approvers this long before the deadline (s, m, h, d):
  #                              # the route's channels post a reminder, once, if undecided
  #   escalation: { after: 5m, to: [oncall] }  # these groups may vote too after the delay;
  #                              # the channels announce it once, if still undecided
  #   channels: [cli]            # where requests are announced: cli, web, slack, teams,
  #                              # webhook (default [cli])
  #   web_only: true             # chat channels (slack) only link to the web page: no
  #                              # buttons, their votes refused; needs web: (default false)
  - name: default
    match: {}                    # no criteria: every request
    approvers: [admins]
"#;

/// The config `init` writes, listening on `listen` (an `IP:PORT`, quoted so that an IPv6
/// `[::]:7443` is not read as a YAML list).
pub fn template(listen: &str) -> String {
    // Debug quoting escapes `"` and `\` as YAML double-quoted scalars do.
    TEMPLATE.replacen(
        &format!("\nlisten: {DEFAULT_LISTEN:?}\n"),
        &format!("\nlisten: {listen:?}\n"),
        1,
    )
}
