-- Rollups for the panel's charts and for counts by busy values.
--
-- attempt_minutes: an account's attempts per minute and outcome. The
-- overview's timeline and every count bounded only by time (and outcome)
-- add up these rows instead of reading millions of attempts; a 30-day chart
-- reads 43,200 rows at most whatever the traffic. Kept exact by triggers in
-- the same transaction as every write of an attempt, as attempt_counts is.
--
-- count_filters / filter_counts: a count by key, pass or address normally
-- walks that column's index, which is short for almost every value. A busy
-- value (a NAT gateway, a leaked ticket, an attacker) can have hundreds of
-- thousands of attempts. When a count would read more than a few thousand
-- index entries, the storage adds the filter (an account plus one, two or
-- three of key, pass and ip) to count_filters, fills filter_counts from the
-- attempts in the same transaction, and from then on the triggers keep it
-- exact. See usher/storage/counting.py for when and how.

CREATE TABLE attempt_minutes (
    cdn         INTEGER NOT NULL,
    minute      INTEGER NOT NULL,   -- UNIX seconds of the minute's start
    success     INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (cdn, minute, success)
) WITHOUT ROWID;

-- mask says which of key (1), pass (2) and ip (4) the filter compares; the
-- columns it does not compare hold ''.
CREATE TABLE count_filters (
    id          INTEGER PRIMARY KEY,
    cdn         INTEGER NOT NULL,
    mask        INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    pass        TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (cdn, mask, key, pass, ip)
);

CREATE TABLE filter_counts (
    filter      INTEGER NOT NULL,
    grain       INTEGER NOT NULL,   -- as in attempt_counts
    app         TEXT    NOT NULL,
    video       TEXT    NOT NULL,
    success     INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (filter, grain, app, video, success)
) WITHOUT ROWID;

CREATE TRIGGER attempts_minute_insert AFTER INSERT ON attempts
WHEN NEW.cdn IS NOT NULL
BEGIN
    INSERT INTO attempt_minutes (cdn, minute, success, n)
    VALUES (NEW.cdn, NEW.at - NEW.at % 60, NEW.success, 1)
    ON CONFLICT (cdn, minute, success) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER attempts_minute_delete AFTER DELETE ON attempts
WHEN OLD.cdn IS NOT NULL
BEGIN
    UPDATE attempt_minutes SET n = n - 1
    WHERE cdn = OLD.cdn AND minute = OLD.at - OLD.at % 60 AND success = OLD.success;
END;

CREATE TRIGGER attempts_minute_update AFTER UPDATE OF cdn, at, success ON attempts
BEGIN
    UPDATE attempt_minutes SET n = n - 1
    WHERE OLD.cdn IS NOT NULL AND cdn = OLD.cdn AND minute = OLD.at - OLD.at % 60
      AND success = OLD.success;
    INSERT INTO attempt_minutes (cdn, minute, success, n)
    SELECT NEW.cdn, NEW.at - NEW.at % 60, NEW.success, 1 WHERE NEW.cdn IS NOT NULL
    ON CONFLICT (cdn, minute, success) DO UPDATE SET n = n + 1;
END;

-- The filters an attempt belongs to: the seven combinations of its key, pass
-- and ip, each one probe of the UNIQUE index (CROSS JOIN keeps that order),
-- so the cost does not grow with the number of filters. The guard keeps the
-- common case (an account with no busy values) at one probe. Each filter
-- keeps the same four grains as attempt_counts, so a count is a lookup of
-- at most two rows however many apps and videos a busy value touched; the
-- delete trigger finds each grain's row by primary key, as 0005 does.
CREATE TRIGGER attempts_filter_insert AFTER INSERT ON attempts
WHEN NEW.cdn IS NOT NULL AND EXISTS (SELECT 1 FROM count_filters WHERE cdn = NEW.cdn)
BEGIN
    INSERT INTO filter_counts (filter, grain, app, video, success, n)
    SELECT f.id, g.grain,
           CASE WHEN g.grain IN (1, 3) THEN NEW.app ELSE '' END,
           CASE WHEN g.grain IN (2, 3) THEN NEW.video ELSE '' END,
           NEW.success, 1
    FROM (SELECT 1 AS mask, NEW.key AS key, '' AS pass, '' AS ip
         UNION ALL SELECT 2, '', NEW.pass, '' UNION ALL SELECT 3, NEW.key, NEW.pass, ''
         UNION ALL SELECT 4, '', '', NEW.ip UNION ALL SELECT 5, NEW.key, '', NEW.ip
         UNION ALL SELECT 6, '', NEW.pass, NEW.ip
         UNION ALL SELECT 7, NEW.key, NEW.pass, NEW.ip) AS v
         CROSS JOIN count_filters AS f ON f.cdn = NEW.cdn AND f.mask = v.mask
             AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip
    CROSS JOIN (SELECT 0 AS grain UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS g
    WHERE true
    ON CONFLICT (filter, grain, app, video, success) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER attempts_filter_delete AFTER DELETE ON attempts
WHEN OLD.cdn IS NOT NULL AND EXISTS (SELECT 1 FROM count_filters WHERE cdn = OLD.cdn)
BEGIN
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 0 AND app = '' AND video = '' AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 1 AND app = OLD.app AND video = '' AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 2 AND app = '' AND video = OLD.video AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 3 AND app = OLD.app AND video = OLD.video AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
END;

-- Nothing rewrites attempts today (see 0004); this keeps the filter counts
-- exact if a future job does.
CREATE TRIGGER attempts_filter_update AFTER UPDATE OF cdn, key, pass, ip, app, video, success
ON attempts
WHEN EXISTS (SELECT 1 FROM count_filters WHERE cdn IN (OLD.cdn, NEW.cdn))
BEGIN
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 0 AND app = '' AND video = '' AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 1 AND app = OLD.app AND video = '' AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 2 AND app = '' AND video = OLD.video AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    UPDATE filter_counts SET n = n - 1
    WHERE grain = 3 AND app = OLD.app AND video = OLD.video AND success = OLD.success
      AND filter IN (SELECT f.id FROM (SELECT 1 AS mask, OLD.key AS key, '' AS pass, '' AS ip
                     UNION ALL SELECT 2, '', OLD.pass, '' UNION ALL SELECT 3, OLD.key, OLD.pass, ''
                     UNION ALL SELECT 4, '', '', OLD.ip UNION ALL SELECT 5, OLD.key, '', OLD.ip
                     UNION ALL SELECT 6, '', OLD.pass, OLD.ip
                     UNION ALL SELECT 7, OLD.key, OLD.pass, OLD.ip) AS v
                     CROSS JOIN count_filters AS f ON f.cdn = OLD.cdn AND f.mask = v.mask
                         AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip);
    INSERT INTO filter_counts (filter, grain, app, video, success, n)
    SELECT f.id, g.grain,
           CASE WHEN g.grain IN (1, 3) THEN NEW.app ELSE '' END,
           CASE WHEN g.grain IN (2, 3) THEN NEW.video ELSE '' END,
           NEW.success, 1
    FROM (SELECT 1 AS mask, NEW.key AS key, '' AS pass, '' AS ip
         UNION ALL SELECT 2, '', NEW.pass, '' UNION ALL SELECT 3, NEW.key, NEW.pass, ''
         UNION ALL SELECT 4, '', '', NEW.ip UNION ALL SELECT 5, NEW.key, '', NEW.ip
         UNION ALL SELECT 6, '', NEW.pass, NEW.ip
         UNION ALL SELECT 7, NEW.key, NEW.pass, NEW.ip) AS v
         CROSS JOIN count_filters AS f ON f.cdn = NEW.cdn AND f.mask = v.mask
             AND f.key = v.key AND f.pass = v.pass AND f.ip = v.ip
    CROSS JOIN (SELECT 0 AS grain UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS g
    WHERE true
    ON CONFLICT (filter, grain, app, video, success) DO UPDATE SET n = n + 1;
END;

INSERT INTO attempt_minutes (cdn, minute, success, n)
SELECT cdn, at - at % 60, success, COUNT(*) FROM attempts
WHERE cdn IS NOT NULL GROUP BY cdn, at - at % 60, success;

-- A time range with an app or video filter reads this index instead of the
-- whole range (the rollups say which is smaller): with `at` in it, the time
-- test needs no table row, so a busy day and a small app cost the app's
-- index entries alone. It serves every query the old (cdn, app, video)
-- index served.
DROP INDEX attempts_cdn_app_video;
CREATE INDEX attempts_cdn_app_video ON attempts (cdn, app, video, at);

-- The apps an account logged a video under (a list by video alone reads
-- its (cdn, app, video, at) entries app by app): without this, finding them
-- scanned every (app, video) row of the account's rollup.
CREATE INDEX attempt_counts_video ON attempt_counts (cdn, grain, video);
