-- Opaque tokens, stored as SHA-256 hashes (see src/tokens/sqlite.rs).
CREATE TABLE access_tokens (
    token_hash    TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    app_id        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX access_tokens_by_user ON access_tokens (app_id, user_id);

CREATE TABLE client_tokens (
    token_hash    TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    app_id        TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    user_id       TEXT,
    key_id        TEXT,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
