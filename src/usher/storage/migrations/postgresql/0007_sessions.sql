-- PostgreSQL, mirroring sqlite/0007_sessions.sql.
-- Live sessions (README, "Live sessions"): every allowed playback start
-- opens one; signs of life renew it; the server's end notice, a kick, a
-- revoke or silence ends it, and ended sessions stay as history until
-- retention prunes them. Replaces playback_sessions, whose open rows move
-- over (their ids were already the integrations' handles). Times are UNIX
-- seconds, UTC.

ALTER TABLE tickets ADD COLUMN max_viewers BIGINT NOT NULL DEFAULT 0;

CREATE TABLE sessions (
    -- The public id: never reused.
    id           TEXT    PRIMARY KEY,
    -- How the streaming server names the playback in later callbacks.
    handle       TEXT    NOT NULL,
    -- The ticket's account; NULL only if the ticket has since disappeared.
    cdn          BIGINT,
    key          TEXT    NOT NULL,
    ip           TEXT    NOT NULL,
    app          TEXT    NOT NULL,
    video        TEXT    NOT NULL,
    protocol     TEXT    NOT NULL,
    started_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL,
    -- Open until then without a sign of life; for a kicked HTTP session,
    -- refused until then.
    expires_at   BIGINT  NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT,
    -- A second name the server gave the playback (MediaMTX's reader id).
    alias        TEXT
);
-- The latest session of a handle (every callback after a start).
CREATE INDEX sessions_handle ON sessions (handle, started_at);
-- A ticket's open sessions (max_viewers, kicks, revokes): only open rows.
CREATE INDEX sessions_open_key ON sessions (key) WHERE ended_at IS NULL;
-- Sweeping idle sessions reads only the open ones' expiry.
CREATE INDEX sessions_open_expiry ON sessions (expires_at) WHERE ended_at IS NULL;
-- History, newest first: an account's, and a ticket's.
CREATE INDEX sessions_cdn_started ON sessions (cdn, started_at);
CREATE INDEX sessions_key_started ON sessions (key, started_at);
-- An account's sessions from one address (the panel's and sevu.sessions'
-- address filter), without reading the whole history.
CREATE INDEX sessions_cdn_ip_started ON sessions (cdn, ip, started_at);
-- End notices naming the alias.
CREATE INDEX sessions_alias ON sessions (alias) WHERE alias IS NOT NULL;
-- Pruning history.
CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;

INSERT INTO sessions
SELECT id, id, cdn, key, ip, app, video,
       CASE WHEN id LIKE 'rtmp:%' THEN 'rtmp' ELSE 'hls' END,
       created_at, created_at, expires_at, NULL, NULL, NULL
FROM playback_sessions;
DROP TABLE playback_sessions;
