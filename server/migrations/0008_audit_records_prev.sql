-- A stored record's `prev` column repeated what its record text already says (the canonical
-- JSON the host hashed carries `prev`), and no query read it: about 70 of a row's 900 or so
-- bytes, written again to the WAL, on every record the collector stores. Verifying a store
-- (`airlock-server audit verify`) reads the record text. SQLite rewrites the table to drop a
-- column (once, at this migration); PostgreSQL only marks it dropped.
ALTER TABLE audit_records DROP COLUMN prev;
