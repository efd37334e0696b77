-- Usher schema v1 (SQLite). Times are UNIX seconds, UTC.

CREATE TABLE accounts (
    cdn         INTEGER PRIMARY KEY,
    username    TEXT    NOT NULL UNIQUE,
    api_key     TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

CREATE TABLE tickets (
    id          INTEGER PRIMARY KEY,
    cdn         INTEGER NOT NULL REFERENCES accounts (cdn),
    key         TEXT    NOT NULL UNIQUE,
    pass        TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    video       TEXT    NOT NULL,
    app         TEXT    NOT NULL,
    uses        INTEGER NOT NULL,
    use_count   INTEGER NOT NULL DEFAULT 0,
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    expire_at   INTEGER NOT NULL,
    used_at     INTEGER,
    -- '|'-joined values the auto slots bound to, in binding order.
    bound_ips   TEXT    NOT NULL DEFAULT ''
);
-- sevu.search lists an account's tickets newest first.
CREATE INDEX tickets_cdn_id ON tickets (cdn, id);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    -- NULL when the key is unknown and no account's username prefixes the app.
    cdn         INTEGER,
    at          INTEGER NOT NULL,
    key         TEXT    NOT NULL,
    pass        TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    video       TEXT    NOT NULL,
    app         TEXT    NOT NULL,
    appinst     TEXT    NOT NULL,
    pageurl     TEXT    NOT NULL,
    refurl      TEXT    NOT NULL,
    success     INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    server_ip   TEXT    NOT NULL
);
-- sevu.errorlog and the per-ticket filters of sevu.errorcount.
CREATE INDEX attempts_cdn_key ON attempts (cdn, key, at);
CREATE INDEX attempts_cdn_ip ON attempts (cdn, ip, at);
CREATE INDEX attempts_cdn_app_video ON attempts (cdn, app, video);
CREATE INDEX attempts_cdn_at ON attempts (cdn, at);

-- Signatures already accepted, so a replay within the timestamp window is
-- refused by every process sharing this database.
CREATE TABLE used_signatures (
    digest      BLOB    PRIMARY KEY,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX used_signatures_expiry ON used_signatures (expires_at);
