-- Rollups (mirrors sqlite/0004_counts.sql and sqlite/0006_rollups.sql).
--
-- The same three rollups as SQLite, with the same meaning:
--   attempt_counts   per (account, grain, app, video, outcome), all time;
--   attempt_minutes  per (account, minute, outcome);
--   filter_counts    per busy-value filter (count_filters), grain, app,
--                    video and outcome.
--
-- SQLite has one writer, so its triggers update these rows in place. Here
-- many nodes insert attempts at once, and updating the same few rows from
-- every check would queue all of an account's checks behind one another on
-- those rows' locks. So nothing on the check path updates a rollup row: a
-- statement trigger adds what each INSERT or DELETE changed, grouped, as new
-- rows of a *_deltas table (an insert never waits for another), in the same
-- transaction as the attempts. A background job (merge_rollup_deltas, run
-- by one node at a time) moves the deltas into the rollups in one
-- transaction. A reader adds the rollup row and its pending deltas in one
-- statement, so it sees one snapshot: every committed attempt is counted
-- exactly once, whether its delta is merged yet or not.

CREATE TABLE attempt_counts (
    cdn         BIGINT   NOT NULL,
    grain       SMALLINT NOT NULL,
    app         TEXT     NOT NULL,
    video       TEXT     NOT NULL,
    success     BOOLEAN  NOT NULL,
    n           BIGINT   NOT NULL,
    PRIMARY KEY (cdn, grain, app, video, success)
);
CREATE TABLE attempt_count_deltas (
    cdn         BIGINT   NOT NULL,
    grain       SMALLINT NOT NULL,
    app         TEXT     NOT NULL,
    video       TEXT     NOT NULL,
    success     BOOLEAN  NOT NULL,
    n           BIGINT   NOT NULL
);
CREATE INDEX attempt_count_deltas_key ON attempt_count_deltas (cdn, grain, app, video);

CREATE TABLE attempt_minutes (
    cdn         BIGINT   NOT NULL,
    minute      BIGINT   NOT NULL,
    success     BOOLEAN  NOT NULL,
    n           BIGINT   NOT NULL,
    PRIMARY KEY (cdn, minute, success)
);
CREATE TABLE attempt_minute_deltas (
    cdn         BIGINT   NOT NULL,
    minute      BIGINT   NOT NULL,
    success     BOOLEAN  NOT NULL,
    n           BIGINT   NOT NULL
);
CREATE INDEX attempt_minute_deltas_key ON attempt_minute_deltas (cdn, minute);

CREATE TABLE count_filters (
    id          BIGINT   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cdn         BIGINT   NOT NULL,
    mask        SMALLINT NOT NULL,
    key         TEXT     NOT NULL,
    pass        TEXT     NOT NULL,
    ip          TEXT     NOT NULL,
    created_at  BIGINT   NOT NULL,
    UNIQUE (cdn, mask, key, pass, ip)
);
CREATE TABLE filter_counts (
    filter      BIGINT   NOT NULL,
    grain       SMALLINT NOT NULL,
    app         TEXT     NOT NULL,
    video       TEXT     NOT NULL,
    success     BOOLEAN  NOT NULL,
    n           BIGINT   NOT NULL,
    PRIMARY KEY (filter, grain, app, video, success)
);
CREATE TABLE filter_count_deltas (
    filter      BIGINT   NOT NULL,
    grain       SMALLINT NOT NULL,
    app         TEXT     NOT NULL,
    video       TEXT     NOT NULL,
    success     BOOLEAN  NOT NULL,
    n           BIGINT   NOT NULL
);
CREATE INDEX filter_count_deltas_key ON filter_count_deltas (filter, grain, app, video);

-- Adds sign * (the rows of `changed`) to the deltas. `changed` is the
-- statement's transition table, named per trigger below.
CREATE FUNCTION attempts_rollup_deltas() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO attempt_count_deltas (cdn, grain, app, video, success, n)
        SELECT o.cdn, g.grain,
               CASE WHEN g.grain IN (1, 3) THEN o.app ELSE '' END,
               CASE WHEN g.grain IN (2, 3) THEN o.video ELSE '' END,
               o.success, -count(*)
        FROM old_rows AS o CROSS JOIN (VALUES (0), (1), (2), (3)) AS g (grain)
        WHERE o.cdn IS NOT NULL GROUP BY 1, 2, 3, 4, 5;
        INSERT INTO attempt_minute_deltas (cdn, minute, success, n)
        SELECT cdn, at - at % 60, success, -count(*) FROM old_rows
        WHERE cdn IS NOT NULL GROUP BY 1, 2, 3;
        INSERT INTO filter_count_deltas (filter, grain, app, video, success, n)
        SELECT f.id, g.grain,
               CASE WHEN g.grain IN (1, 3) THEN o.app ELSE '' END,
               CASE WHEN g.grain IN (2, 3) THEN o.video ELSE '' END,
               o.success, -count(*)
        FROM old_rows AS o JOIN count_filters AS f ON f.cdn = o.cdn
            AND (f.mask & 1 = 0 OR f.key = o.key)
            AND (f.mask & 2 = 0 OR f.pass = o.pass)
            AND (f.mask & 4 = 0 OR f.ip = o.ip)
        CROSS JOIN (VALUES (0), (1), (2), (3)) AS g (grain)
        GROUP BY 1, 2, 3, 4, 5;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO attempt_count_deltas (cdn, grain, app, video, success, n)
        SELECT r.cdn, g.grain,
               CASE WHEN g.grain IN (1, 3) THEN r.app ELSE '' END,
               CASE WHEN g.grain IN (2, 3) THEN r.video ELSE '' END,
               r.success, count(*)
        FROM new_rows AS r CROSS JOIN (VALUES (0), (1), (2), (3)) AS g (grain)
        WHERE r.cdn IS NOT NULL GROUP BY 1, 2, 3, 4, 5;
        INSERT INTO attempt_minute_deltas (cdn, minute, success, n)
        SELECT cdn, at - at % 60, success, count(*) FROM new_rows
        WHERE cdn IS NOT NULL GROUP BY 1, 2, 3;
        INSERT INTO filter_count_deltas (filter, grain, app, video, success, n)
        SELECT f.id, g.grain,
               CASE WHEN g.grain IN (1, 3) THEN r.app ELSE '' END,
               CASE WHEN g.grain IN (2, 3) THEN r.video ELSE '' END,
               r.success, count(*)
        FROM new_rows AS r JOIN count_filters AS f ON f.cdn = r.cdn
            AND (f.mask & 1 = 0 OR f.key = r.key)
            AND (f.mask & 2 = 0 OR f.pass = r.pass)
            AND (f.mask & 4 = 0 OR f.ip = r.ip)
        CROSS JOIN (VALUES (0), (1), (2), (3)) AS g (grain)
        GROUP BY 1, 2, 3, 4, 5;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER attempts_rollup_insert AFTER INSERT ON attempts
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION attempts_rollup_deltas();
CREATE TRIGGER attempts_rollup_delete AFTER DELETE ON attempts
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION attempts_rollup_deltas();
CREATE TRIGGER attempts_rollup_update AFTER UPDATE ON attempts
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION attempts_rollup_deltas();

-- Moves every delta this transaction can see into its rollup; returns how
-- many delta rows it moved, or -1 when another node is merging right now.
-- Deltas committed while it runs are not visible to its DELETE, so they stay
-- for the next merge; nothing is counted twice or lost.
CREATE FUNCTION merge_rollup_deltas() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    moved BIGINT := 0;
    rows_now BIGINT;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('usher.merge_rollup_deltas')) THEN
        RETURN -1;
    END IF;
    WITH d AS (DELETE FROM attempt_count_deltas RETURNING *)
    INSERT INTO attempt_counts AS t (cdn, grain, app, video, success, n)
    SELECT cdn, grain, app, video, success, sum(n) FROM d GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (cdn, grain, app, video, success) DO UPDATE SET n = t.n + EXCLUDED.n;
    GET DIAGNOSTICS rows_now = ROW_COUNT;
    moved := moved + rows_now;
    WITH d AS (DELETE FROM attempt_minute_deltas RETURNING *)
    INSERT INTO attempt_minutes AS t (cdn, minute, success, n)
    SELECT cdn, minute, success, sum(n) FROM d GROUP BY 1, 2, 3
    ON CONFLICT (cdn, minute, success) DO UPDATE SET n = t.n + EXCLUDED.n;
    GET DIAGNOSTICS rows_now = ROW_COUNT;
    moved := moved + rows_now;
    WITH d AS (DELETE FROM filter_count_deltas RETURNING *)
    INSERT INTO filter_counts AS t (filter, grain, app, video, success, n)
    SELECT filter, grain, app, video, success, sum(n) FROM d GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (filter, grain, app, video, success) DO UPDATE SET n = t.n + EXCLUDED.n;
    GET DIAGNOSTICS rows_now = ROW_COUNT;
    RETURN moved + rows_now;
END $$;

-- Count what is already logged.
INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
SELECT cdn, g.grain,
       CASE WHEN g.grain IN (1, 3) THEN app ELSE '' END,
       CASE WHEN g.grain IN (2, 3) THEN video ELSE '' END,
       success, count(*)
FROM attempts CROSS JOIN (VALUES (0), (1), (2), (3)) AS g (grain)
WHERE cdn IS NOT NULL GROUP BY 1, 2, 3, 4, 5;

INSERT INTO attempt_minutes (cdn, minute, success, n)
SELECT cdn, at - at % 60, success, count(*) FROM attempts
WHERE cdn IS NOT NULL GROUP BY 1, 2, 3;

-- A time range with an app or video filter reads this index instead of the
-- whole range (the rollups say which is smaller): with `at` in it, the time
-- test needs no table row, so a busy day and a small app cost the app's
-- index entries alone. It serves every query the old (cdn, app, video)
-- index served.
DROP INDEX attempts_cdn_app_video;
CREATE INDEX attempts_cdn_app_video ON attempts (cdn, app, video, at);

-- The apps an account logged a video under (see postgres/sql.py,
-- attempts_where): without this, finding them read every (app, video) row
-- of the account's rollup.
CREATE INDEX attempt_counts_video ON attempt_counts (cdn, grain, video);
