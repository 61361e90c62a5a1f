-- The Slack channel's messages (see server/src/slack/). Portable like 0001: TEXT and BIGINT
-- only, the same file on SQLite and PostgreSQL.

-- One row per request the Slack channel posts about. A row with `ts` NULL is a claim: a
-- replica is posting the message right now (`claimed_ms`, 0 once it gave up), so that two
-- replicas (or a replica's restart sweep) do not post one request twice. `channel` and `ts`
-- are what chat.update and thread replies need, after a restart too; `closed_ms` is set once
-- the message shows the request's outcome, so a restart finishes only those that do not.
CREATE TABLE slack_messages (
    request_id TEXT PRIMARY KEY,
    channel    TEXT,
    ts         TEXT,
    claimed_ms BIGINT NOT NULL,
    posted_ms  BIGINT,
    closed_ms  BIGINT
);
-- The restart sweep looks for posted messages whose request closed meanwhile.
CREATE INDEX slack_messages_open ON slack_messages (request_id) WHERE closed_ms IS NULL;
