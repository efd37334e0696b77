-- Publishers: who may publish (push) a stream, per account (SPEC §6).

-- One row per app + stream + user. ``stream`` is a name or '*' (every
-- stream of the app). ``login`` is the publisher's user name ("user" is a
-- reserved word in PostgreSQL); the open entry, which lets anyone publish
-- without credentials, stores '' there and NULL as ``pass_hash``, so the
-- unique index treats it as one value. ``pass_hash`` is an encoded scrypt
-- hash, never the pass. The ScaleEngine recording settings are stored and
-- returned unchanged (NULL when not given); Usher records nothing.
CREATE TABLE stream_users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    cdn              INTEGER NOT NULL REFERENCES accounts (cdn),
    app              TEXT    NOT NULL,
    stream           TEXT    NOT NULL,
    login            TEXT    NOT NULL,
    pass_hash        TEXT,
    record           INTEGER,
    record_type      TEXT,
    segment_type     TEXT,
    segment_value    INTEGER,
    save_folder      TEXT,
    playlist_count   INTEGER,
    playlist_timeout INTEGER,
    enable_dvr       INTEGER,
    ga_key           TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    CHECK ((login = '') = (pass_hash IS NULL))
);
-- Saving the same app + stream + user again replaces it; listing an
-- account's stream users (by app, then stream) reads this index too.
CREATE UNIQUE INDEX stream_users_name ON stream_users (cdn, app, stream, login);
-- A publish check knows the app and the stream, never the cdn (the app's
-- ``username-`` prefix ties it to an account).
CREATE INDEX stream_users_publish ON stream_users (app, stream);
