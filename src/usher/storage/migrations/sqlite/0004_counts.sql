-- Instant sevu.errorcount at tens of millions of attempts.
--
-- errorcount filters by key, pass, app, video, ip and success. key, pass and
-- ip are selective (a handful to a few hundred attempts per value), so an
-- index on each finds the matching rows directly. app, video and success are
-- not: one app can hold millions of attempts, and counting them through an
-- index takes hundreds of milliseconds. For those, attempt_counts keeps the
-- count itself, maintained by triggers in the same transaction as every
-- insert, update or delete of an attempt, so it is exact at every commit and
-- no code path that writes attempts can forget it.

-- pass was the one errorcount filter without an index. Like the key and ip
-- indexes it continues with the time, so time bounds narrow the same scan.
CREATE INDEX attempts_cdn_pass ON attempts (cdn, pass, at);

-- One row per (account, grain, app, video, outcome). The grain says which of
-- app and video the row groups by (0: neither, 1: app, 2: video, 3: both);
-- a column the grain does not group by holds ''. Keeping every grain makes
-- each of the eight app/video/success combinations a lookup of at most two
-- rows, however many distinct apps and videos an account logs (including
-- junk names from refused attempts).
CREATE TABLE attempt_counts (
    cdn         INTEGER NOT NULL,
    grain       INTEGER NOT NULL,
    app         TEXT    NOT NULL,
    video       TEXT    NOT NULL,
    success     INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (cdn, grain, app, video, success)
) WITHOUT ROWID;

-- Attempts that no account owns (cdn NULL) are never counted by any account,
-- so they get no rollup rows.
CREATE TRIGGER attempts_count_insert AFTER INSERT ON attempts
WHEN NEW.cdn IS NOT NULL
BEGIN
    INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
    VALUES (NEW.cdn, 0, '', '', NEW.success, 1),
           (NEW.cdn, 1, NEW.app, '', NEW.success, 1),
           (NEW.cdn, 2, '', NEW.video, NEW.success, 1),
           (NEW.cdn, 3, NEW.app, NEW.video, NEW.success, 1)
    ON CONFLICT (cdn, grain, app, video, success) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER attempts_count_delete AFTER DELETE ON attempts
WHEN OLD.cdn IS NOT NULL
BEGIN
    UPDATE attempt_counts SET n = n - 1
    WHERE cdn = OLD.cdn AND success = OLD.success AND (
        (grain = 0 AND app = '' AND video = '')
        OR (grain = 1 AND app = OLD.app AND video = '')
        OR (grain = 2 AND app = '' AND video = OLD.video)
        OR (grain = 3 AND app = OLD.app AND video = OLD.video));
END;

-- Nothing rewrites attempts today; this keeps the counts exact if a future
-- job does (re-attributing unowned attempts, say).
CREATE TRIGGER attempts_count_update AFTER UPDATE OF cdn, app, video, success ON attempts
BEGIN
    UPDATE attempt_counts SET n = n - 1
    WHERE OLD.cdn IS NOT NULL AND cdn = OLD.cdn AND success = OLD.success AND (
        (grain = 0 AND app = '' AND video = '')
        OR (grain = 1 AND app = OLD.app AND video = '')
        OR (grain = 2 AND app = '' AND video = OLD.video)
        OR (grain = 3 AND app = OLD.app AND video = OLD.video));
    INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
    SELECT NEW.cdn, g.grain,
           CASE WHEN g.grain IN (1, 3) THEN NEW.app ELSE '' END,
           CASE WHEN g.grain IN (2, 3) THEN NEW.video ELSE '' END,
           NEW.success, 1
    FROM (SELECT 0 AS grain UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS g
    WHERE NEW.cdn IS NOT NULL
    ON CONFLICT (cdn, grain, app, video, success) DO UPDATE SET n = n + 1;
END;

-- Count what is already logged: the finest grain from the attempts, the
-- coarser ones from it.
INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
SELECT cdn, 3, app, video, success, COUNT(*) FROM attempts
WHERE cdn IS NOT NULL GROUP BY cdn, app, video, success;

INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
SELECT cdn, 2, '', video, success, SUM(n) FROM attempt_counts
WHERE grain = 3 GROUP BY cdn, video, success;

INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
SELECT cdn, 1, app, '', success, SUM(n) FROM attempt_counts
WHERE grain = 3 GROUP BY cdn, app, success;

INSERT INTO attempt_counts (cdn, grain, app, video, success, n)
SELECT cdn, 0, '', '', success, SUM(n) FROM attempt_counts
WHERE grain = 3 GROUP BY cdn, success;
