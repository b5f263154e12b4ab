-- Merchants of an app and their API keys (hashed; see src/merchants/store.rs).
-- `IF NOT EXISTS` because these tables predate versioned migrations: a file made by an
-- older payrelay already has them, and this migration then only records itself.
CREATE TABLE IF NOT EXISTS merchants (
    app_id      TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, merchant_id)
);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    FOREIGN KEY (app_id, merchant_id) REFERENCES merchants (app_id, merchant_id)
);

CREATE INDEX IF NOT EXISTS api_keys_by_merchant ON api_keys (app_id, merchant_id);
