-- The publish log: one row per publish a streaming server's hook asked
-- about (SPEC §6), allowed or denied, kept as long as the attempts.

-- ``cdn`` is the account that owns the app by its ``username-`` prefix, NULL
-- when none does. Like ``attempts.cdn`` it has no foreign key: accounts are
-- never deleted, so one would protect nothing, and on PostgreSQL it would
-- take a share lock on the account's row for every logged publish (a flood
-- of them would queue on that one row). ``login`` is the user the publish
-- URL named, '' when it named none (as stream_users keeps the open entry).
-- ``stream_user_id`` names the stream user that allowed the publish, with
-- no foreign key either: that stream user may be removed later, and its
-- log rows must stay. Ids are never reused, even once pruning has emptied
-- the log, so a listing's cursor never names a newer row.
CREATE TABLE publish_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    cdn            INTEGER,
    at             INTEGER NOT NULL,
    ip             TEXT    NOT NULL,
    app            TEXT    NOT NULL,
    stream         TEXT    NOT NULL,
    login          TEXT    NOT NULL,
    allowed        INTEGER NOT NULL,
    reason         TEXT    NOT NULL,
    server         TEXT    NOT NULL,
    server_ip      TEXT    NOT NULL,
    stream_user_id INTEGER
);
-- An account's log, newest first by id, from a cursor: each filter the
-- listing offers (none, allowed or denied, one address, one app) reads one
-- range of its own index in id order, so a page never sorts and never
-- walks other rows, however many publishes the account logged.
CREATE INDEX publish_log_cdn ON publish_log (cdn, id);
CREATE INDEX publish_log_cdn_allowed ON publish_log (cdn, allowed, id);
CREATE INDEX publish_log_cdn_ip ON publish_log (cdn, ip, id);
CREATE INDEX publish_log_cdn_app ON publish_log (cdn, app, id);
-- The brute-force rule reads an address's latest checked denials on every
-- publish, of all accounts and none; only those rows are indexed, so a
-- flood of allowed or blocked publishes leaves this read as short as it was.
CREATE INDEX publish_log_denials ON publish_log (ip, at)
    WHERE NOT allowed AND reason <> 'blocked';
-- Retention deletes by age, oldest first.
CREATE INDEX publish_log_at ON publish_log (at);
