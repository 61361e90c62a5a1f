-- A query of one host's records reads them from the primary key (host, seq), in seq order,
-- which for one host is cursor order: its batches reserve their cursors in chain order
-- (server/src/store/audit_order.rs). Retention finds each host's last deleted record among
-- the rows it deletes, through the cursor index. The index on (host, cursor) served only
-- those two, and every stored record paid for it: one B-tree insert per record, on the
-- collector's busiest path (about a seventh of a batch's insert time on SQLite).
DROP INDEX audit_records_host_cursor;
