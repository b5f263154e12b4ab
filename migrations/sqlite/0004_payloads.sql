-- Payment requests ("payloads", seed 001; see src/payloads). A row is created pending and
-- changes state once (resolved, cancelled or expired). `announce` is the outbox of that
-- change: set in the same statement as the change, cleared once its socket message and
-- callback were published, and published again after a crash in between.
CREATE TABLE payloads (
    uuid               TEXT PRIMARY KEY,     -- random UUIDv4: knowing it admits to /sign/{uuid}
    app_id             TEXT NOT NULL,
    reference_uuid     TEXT NOT NULL,        -- reference_call_uuidv4
    tx_type            TEXT NOT NULL,
    request_json       TEXT NOT NULL,        -- txjson as the app sent it
    options            TEXT NOT NULL,        -- JSON: submit, return_url {app, web}, ...
    custom_meta        TEXT NOT NULL,        -- JSON {identifier, blob, instruction}
    user_token         TEXT,
    created_at         INTEGER NOT NULL,     -- ms since the epoch, like every time here
    expires_at         INTEGER NOT NULL,     -- open before, not resolve before
    state              TEXT NOT NULL,        -- 'pending' | 'resolved' | 'cancelled' | 'expired'
    opened_at          INTEGER,
    opened_by_deeplink INTEGER,              -- 0 / 1 once opened
    signed             INTEGER,              -- 0 / 1 once resolved
    txid               TEXT,
    account            TEXT,
    issued_user_token  TEXT,
    finished_at        INTEGER,              -- resolved, cancelled or expired at
    announce           TEXT,                 -- 'opened' | 'resolved' | 'cancelled' | 'expired'
    announce_at        INTEGER
);
CREATE INDEX payloads_due ON payloads (expires_at)
    WHERE state = 'pending' AND opened_at IS NULL;
CREATE INDEX payloads_unannounced ON payloads (announce_at) WHERE announce IS NOT NULL;
CREATE INDEX payloads_finished ON payloads (finished_at);
CREATE INDEX payloads_created ON payloads (created_at);
