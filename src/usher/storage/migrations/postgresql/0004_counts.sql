-- Faster sevu.errorcount (mirrors sqlite/0004_counts.sql by number).
--
-- pass was the one errorcount filter without an index. Like the key and ip
-- indexes it continues with the time, so time bounds narrow the same scan.
CREATE INDEX attempts_cdn_pass ON attempts (cdn, pass, at);

-- The SQLite schema also keeps per-(account, app, video, outcome) counts in
-- a table maintained by triggers. That is not copied here on purpose: with
-- many nodes writing at once, every attempt of an account would update the
-- same few count rows, and those row locks would queue all of the account's
-- checks behind one another across every node. PostgreSQL counts from the
-- (cdn, …) indexes with index-only scans instead (see docs/scaling.md).
