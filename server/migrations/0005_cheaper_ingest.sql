-- What each stored entry costs PostgreSQL at ingest, cut where nothing needs it (issue 8's
-- 50,000 decisions/s goal; docs/performance.md has the measurements). Per decision, measured
-- alone as backend CPU in INSERT ... SELECT ... ON CONFLICT DO NOTHING statements of 100 rows:
-- 40 µs with the schema before this migration, 27 µs after the first two changes below; the
-- third was measured without ON CONFLICT, as a batch that only extends its chain now inserts
-- (store.rs): 24.5 µs before it, 20.5 µs after.
--
-- 1. body becomes text (-8 µs a row: the jsonb parse). Nothing in SQL reads into an entry's
--    JSON: searches read the columns ingest extracted (0003), and readers parse the text when
--    they serve it. New rows hold the canonical text whose SHA-256 the server checked, with
--    entry_hash last (the stored layout of trace-format.md), so a reader can check it again;
--    rows stored before keep jsonb's rendering of the same JSON.
-- 2. The foreign key to runtimes goes (-4.5 µs a row: its trigger looks the runtime up for
--    every row). An entry is only ever inserted by ingest, under the FOR UPDATE lock of its
--    chain's row, which the foreign key of chains ties to a registered runtime; and runtimes
--    are never deleted (the server's role may not).
-- 3. risk and action are indexed for their rare values only (-4 µs a row: two index inserts
--    for nine decisions in ten). A search for a common value (risk none, low or medium;
--    action auto_reply) finds a page's worth of rows within the first few hundred of the
--    time index (or the runtime's); a rare value, or one nobody expected, still reads its own
--    index range instead of scanning the table for the few it matches.
--
-- Rewriting the table for the type change takes an exclusive lock for as long as it takes to
-- rewrite it and rebuild its indexes: on a server holding millions of entries, apply it in a
-- maintenance window.

ALTER TABLE entries ALTER COLUMN body TYPE text USING body::text;

ALTER TABLE entries DROP CONSTRAINT entries_org_id_runtime_id_fkey;

DROP INDEX entries_decisions_by_risk, entries_decisions_by_action;
CREATE INDEX entries_decisions_by_risk ON entries
    (org_id, risk, occurred_at DESC, runtime_id DESC, seq DESC)
    WHERE stream = 'trace' AND risk NOT IN ('none', 'low', 'medium');
CREATE INDEX entries_decisions_by_action ON entries
    (org_id, action, occurred_at DESC, runtime_id DESC, seq DESC)
    WHERE stream = 'trace' AND action <> 'auto_reply';
