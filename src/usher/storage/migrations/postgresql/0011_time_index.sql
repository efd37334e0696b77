-- The time index carries success, app and video after the time, so that a
-- list in time order (newest first, the panel's explorer) tests those
-- filters on index entries: with (cdn, at, success) alone, each entry the
-- walk passed cost a table fetch, and a page of one app's failures took
-- 0.5 s at 10 M attempts when the newest 130,000 attempts were another
-- app's. Rows of one second that agree on all five columns share one entry
-- (B-tree deduplication), so a burst of one stream's starts stays small.
-- Building it reads the table once (about 30 s at 10 M attempts), during
-- which checks wait: upgrade in a quiet moment.
CREATE INDEX attempts_cdn_at ON attempts (cdn, at, success, app, video);
DROP INDEX attempts_cdn_at_success;
