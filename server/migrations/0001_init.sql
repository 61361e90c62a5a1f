-- airlock-server schema. Portable: the same file runs on SQLite and PostgreSQL (sqlx's Any
-- driver), so it uses only TEXT and BIGINT columns (times are Unix milliseconds, JSON is TEXT,
-- flags are 0/1) and syntax both accept (partial indexes, ON CONFLICT, RETURNING).

-- Hosts: created by `hosts add` (enrolment token issued), enrolled when the token is redeemed.
-- Never deleted, so request rows can name their host without a foreign key.
CREATE TABLE hosts (
    name         TEXT PRIMARY KEY,
    labels       TEXT NOT NULL,              -- JSON object of strings
    cert_sha256  TEXT,                       -- lowercase hex of the certificate's DER
    created_ms   BIGINT NOT NULL,
    enrolled_ms  BIGINT,
    revoked_ms   BIGINT,
    last_seen_ms BIGINT
);
-- Every link call looks the host up by its certificate. UNIQUE allows many NULLs on both.
CREATE UNIQUE INDEX hosts_cert ON hosts (cert_sha256);

-- One-time enrolment tokens (only their SHA-256 is stored).
CREATE TABLE enrollments (
    token_sha256 TEXT PRIMARY KEY,
    host         TEXT NOT NULL REFERENCES hosts (name),
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    used_ms      BIGINT
);
CREATE INDEX enrollments_host ON enrollments (host);

-- API tokens of approvers (only their SHA-256 is stored).
CREATE TABLE api_tokens (
    id           TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    principal    TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    expires_ms   BIGINT NOT NULL,
    revoked_ms   BIGINT
);

-- Requests hosts opened. `version` is bumped by every vote and by the close: the vote's
-- first statement is that UPDATE, which serialises concurrent voters (row lock on
-- PostgreSQL, database write lock on SQLite).
CREATE TABLE requests (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    agent       TEXT,
    state       TEXT NOT NULL,               -- RequestState::as_str
    created_ms  BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    route       TEXT,
    threshold   BIGINT NOT NULL,
    body        TEXT NOT NULL,               -- the host's request, JSON, opaque to the store
    decision    TEXT,                        -- JSON DecisionRecord
    version     BIGINT NOT NULL DEFAULT 0,
    updated_ms  BIGINT NOT NULL
);
-- Listing one host's requests in a state, oldest first (CLI `pending --host`, reconnects).
CREATE INDEX requests_host_state ON requests (host, state, created_ms, id);
-- Listing every pending request, oldest first.
CREATE INDEX requests_state ON requests (state, created_ms, id);
-- The link polls each connected host for decided-but-undelivered requests several times a
-- second; this index holds only those rows, so the (usually empty) answer is one probe
-- however many requests wait for approvers. Queries must spell the condition literally (not
-- as parameters) for SQLite to use it; `state` is a key column too, so that SQLite, matching
-- as many equality terms here as in requests_host_state, prefers this smaller index.
CREATE INDEX requests_undelivered ON requests (host, state, created_ms, id)
    WHERE state = 'pending' AND decision IS NOT NULL;

-- Votes; one per principal and request. `seq` is the request's version the vote created,
-- which orders the votes of a request.
CREATE TABLE votes (
    request_id  TEXT NOT NULL REFERENCES requests (id),
    principal   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    verdict     TEXT NOT NULL,               -- Release: 'allow' or 'deny'
    for_ms      BIGINT,
    deny_always BIGINT NOT NULL,             -- 0 or 1
    reason      TEXT,
    via         TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (request_id, principal)
);

-- Accepted and refused attempts, for the record. `seq` breaks ties between attempts in the
-- same millisecond (MAX + 1 at insert; on PostgreSQL two concurrent inserts may share one,
-- which only leaves their order open).
CREATE TABLE attempts (
    seq        BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL,
    who        TEXT NOT NULL,
    channel    TEXT NOT NULL,
    request_id TEXT,
    action     TEXT NOT NULL,
    result     TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX attempts_seq ON attempts (seq);
CREATE INDEX attempts_at ON attempts (at_ms, seq);
