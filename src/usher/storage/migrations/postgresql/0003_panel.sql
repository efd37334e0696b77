-- The control panel: panel passwords, sign-in sessions and chart queries
-- (mirrors sqlite/0003_panel.sql).

-- At most one panel password per account, as an encoded scrypt hash
-- (never the password itself).
CREATE TABLE panel_passwords (
    cdn         BIGINT  PRIMARY KEY REFERENCES accounts (cdn),
    hash        TEXT    NOT NULL,
    updated_at  BIGINT  NOT NULL
);

-- Signed-in browsers. Kept in the database, not in process memory, so every
-- Usher node behind one load balancer knows every session. Only a SHA-256
-- of the cookie's token is stored.
CREATE TABLE panel_sessions (
    token_hash  BYTEA   PRIMARY KEY,
    cdn         BIGINT  NOT NULL REFERENCES accounts (cdn),
    created_at  BIGINT  NOT NULL,
    seen_at     BIGINT  NOT NULL
);
-- Signing out every session of one account, and purging idle ones.
CREATE INDEX panel_sessions_cdn ON panel_sessions (cdn);
CREATE INDEX panel_sessions_seen ON panel_sessions (seen_at);

-- The charts count an account's attempts per time bucket and outcome. With
-- the outcome in the index, that count can be answered from the index alone.
-- It serves every query the (cdn, at) index served, so that one goes.
CREATE INDEX attempts_cdn_at_success ON attempts (cdn, at, success);
DROP INDEX attempts_cdn_at;
