-- Merchants of an app and their API keys (hashed; see src/merchants/store.rs).
CREATE TABLE merchants (
    app_id      TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, merchant_id)
);

CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    FOREIGN KEY (app_id, merchant_id) REFERENCES merchants (app_id, merchant_id)
);

CREATE INDEX api_keys_by_merchant ON api_keys (app_id, merchant_id);
