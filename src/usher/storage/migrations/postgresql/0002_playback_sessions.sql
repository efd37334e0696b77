-- Usher schema v2 (PostgreSQL), mirroring sqlite/0002_playback_sessions.sql:
-- playback sessions of the streaming-server integrations. A session records
-- that one playback (an HLS viewer's key + address + video, or one RTMP
-- connection) has already spent its use, so that its later requests are
-- re-checked without counting again, by any node sharing this database.
-- Times are UNIX seconds, UTC.

CREATE TABLE playback_sessions (
    -- Chosen by the adapter (a digest of what identifies the playback).
    id          TEXT    PRIMARY KEY,
    key         TEXT    NOT NULL,
    -- The ticket's account; NULL only if the ticket has since disappeared.
    cdn         BIGINT,
    ip          TEXT    NOT NULL,
    app         TEXT    NOT NULL,
    video       TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
-- Purging ended sessions, and listing a ticket's open sessions.
CREATE INDEX playback_sessions_expiry ON playback_sessions (expires_at);
CREATE INDEX playback_sessions_key ON playback_sessions (key);
