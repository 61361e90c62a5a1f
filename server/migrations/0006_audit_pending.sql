-- Cursor reservations of audit batches that have not committed yet (server/src/store/
-- audit_copy.rs). On PostgreSQL a batch no longer holds the records counter from its first
-- write to its commit (migration 0004): it bumps the counter in a short transaction of its own
-- that also adds a row here, stores its records in a second transaction, and deletes that row
-- in the same commit that makes the records visible. Batches (one host's consecutive ones,
-- other hosts', other replicas') then store side by side, while a reader of `cursor > last`
-- still never skips a row that commits later with a smaller cursor: it reads only below the
-- lowest reservation still here (`Store::audit_records`), and every reservation commits
-- before any larger one is given out. A row whose batch died with its process is ignored
-- once older than the store's bound on a batch's time (see `audit_copy::PENDING_EXPIRES`)
-- and deleted by retention. SQLite stores one batch at a time and never adds rows here.
CREATE TABLE audit_pending (
    first_cursor BIGINT NOT NULL PRIMARY KEY,
    reserved_ms  BIGINT NOT NULL             -- the storing replica's clock
);
