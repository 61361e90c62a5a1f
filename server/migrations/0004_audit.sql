-- The audit collector (server/src/collector.rs): every host's hash-chained audit records,
-- verified on arrival. Portable like 0001 (TEXT and BIGINT only).

-- Storage order. One row per counter ('records', 'alerts'). A transaction that stores records
-- (or an alert) first bumps its counter by the number of rows it adds and numbers them from
-- the value it read: that UPDATE is the transaction's first write and holds the counter row
-- (PostgreSQL: row lock; SQLite: the database write lock) until commit, so cursors are given
-- out in commit order on every replica. A tail reading `cursor > last` therefore never skips
-- a row that commits later with a smaller cursor, which neither an autoincrement id (not
-- portable through the Any driver, and assigned before commit) nor a timestamp (clocks of
-- replicas differ) would guarantee. The price is that audit writes of all replicas take turns,
-- which the bounded batches (one transaction per batch) keep short.
CREATE TABLE audit_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO audit_counters (name, value) VALUES ('records', 0);
INSERT INTO audit_counters (name, value) VALUES ('alerts', 0);

-- One row per host that ever presented an audit key. The first key seen is kept (trust on
-- first use; the host is who its certificate says). pruned_seq / pruned_hash: the last record
-- deleted by retention, so the chain continues from it (0 and 64 zeros: nothing pruned).
CREATE TABLE audit_hosts (
    host          TEXT PRIMARY KEY,
    verifier_key  TEXT NOT NULL,             -- signed-note verifier key NAME+KEYID+BASE64
    first_seen_ms BIGINT NOT NULL,
    pruned_seq    BIGINT NOT NULL,
    pruned_hash   TEXT NOT NULL
);

-- Verified records. agent, op, decision, approver: the body's top-level string fields of those
-- names, when present (for the query's filters); record: the canonical JSON as the host sent
-- and hashed it.
CREATE TABLE audit_records (
    host      TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    prev      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    corr      TEXT,
    at_ms     BIGINT NOT NULL,               -- the record's at_unix_ms (the host's clock)
    agent     TEXT,
    op        TEXT,
    decision  TEXT,
    approver  TEXT,
    record    TEXT NOT NULL,
    cursor    BIGINT NOT NULL,               -- see audit_counters
    stored_ms BIGINT NOT NULL,               -- the collector's clock; retention counts from it
    PRIMARY KEY (host, seq)
);
CREATE UNIQUE INDEX audit_records_cursor ON audit_records (cursor);
CREATE INDEX audit_records_host_cursor ON audit_records (host, cursor);
CREATE INDEX audit_records_at ON audit_records (at_ms, cursor);
CREATE INDEX audit_records_stored ON audit_records (stored_ms);

-- Signed checkpoints (C2SP signed notes) that verified against the host's key and records.
CREATE TABLE audit_checkpoints (
    host      TEXT NOT NULL,
    size      BIGINT NOT NULL,
    note      TEXT NOT NULL,
    stored_ms BIGINT NOT NULL,
    PRIMARY KEY (host, size)
);

-- What the collector refused and why (broken chains, bad signatures, gaps, a changed key).
CREATE TABLE audit_alerts (
    cursor  BIGINT NOT NULL PRIMARY KEY,     -- see audit_counters
    host    TEXT NOT NULL,
    at_ms   BIGINT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX audit_alerts_at ON audit_alerts (at_ms);
