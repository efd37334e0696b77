-- A count filter is filled without holding up the checks that insert
-- attempts (postgres/counts.py, add_filter): its row commits first, not
-- ready, so every later insert's and delete's trigger writes its deltas;
-- the fill then adds, in one snapshot, what those triggers could not have
-- written, and marks it ready. Readers use ready filters only. The filters
-- made before this migration were filled under a lock, so they are ready.
-- SQLite fills a filter in the one transaction that makes it and needs no
-- such column.
ALTER TABLE count_filters ADD COLUMN ready BOOLEAN NOT NULL DEFAULT true;
