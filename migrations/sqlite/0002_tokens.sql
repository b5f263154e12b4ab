-- Opaque tokens, stored as SHA-256 hashes (see src/tokens/sqlite.rs). Idempotent, like
-- 0001: these tables existed before migrations did.
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash    TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    app_id        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX IF NOT EXISTS access_tokens_by_user ON access_tokens (app_id, user_id);

CREATE TABLE IF NOT EXISTS client_tokens (
    token_hash    TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    app_id        TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    user_id       TEXT,
    key_id        TEXT,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
