-- Retention (Store::prune_audit) finds what to delete in storage order, through the cursor
-- indexes: the rows before the first one stored at or after the cut-off, and per host the
-- last of those. The index on stored_ms served only that hourly query, and every stored audit
-- record paid for it (one more B-tree insert per record, on the collector's busiest path).
DROP INDEX audit_records_stored;
