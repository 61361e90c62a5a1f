-- Cursor reservations of audit batches being stored on PostgreSQL (server/src/store/
-- audit_copy.rs). There a batch no longer holds the records counter from its first write to
-- its commit (migration 0004): its transaction first learns its transaction id, then bumps
-- the counter in a short transaction of its own that also adds a row here, copies its
-- records, and deletes that row in the same commit that makes the records visible. Batches
-- (one host's consecutive ones, other hosts', other replicas') then store side by side,
-- while a reader of `cursor > last` still never skips a row that commits later with a
-- smaller cursor: it reads only below the lowest reservation whose transaction was still
-- running when its statement's snapshot was taken (`Store::audit_records`). A row left by a
-- batch whose transaction ended without committing (its process died) is ignored at once
-- and deleted by retention. SQLite stores one batch at a time and never adds rows here.
CREATE TABLE audit_pending (
    first_cursor BIGINT NOT NULL PRIMARY KEY,
    host         TEXT NOT NULL,
    xid          BIGINT NOT NULL             -- the storing transaction's pg_current_xact_id()
);
