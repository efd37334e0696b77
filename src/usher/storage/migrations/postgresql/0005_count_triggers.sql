-- Mirrors sqlite/0005_count_triggers.sql by number, so both backends are at
-- the same schema version (`usher db copy` requires it). That migration
-- rewrites the SQLite rollup's triggers; PostgreSQL keeps no rollup (see
-- 0004_counts.sql), so there is nothing to change here.
SELECT 1;
