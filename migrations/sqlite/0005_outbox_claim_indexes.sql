-- The outbox's delivery rows without foreign keys, and indexes a claim can walk per
-- endpoint (see src/webhooks/store.rs, `claim`); the PostgreSQL migration of the same
-- name says why. SQLite cannot drop a constraint, so both tables are rebuilt: the
-- attempts first (they refer to the deliveries, whose old table is then dropped without
-- a cascade), then the deliveries.

CREATE TABLE webhook_attempts_new (
    id            INTEGER PRIMARY KEY,
    endpoint_id   TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    attempted_at  INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT
);
INSERT INTO webhook_attempts_new (id, endpoint_id, event_id, attempted_at, status_code, error,
                                  latency_ms, response_body)
    SELECT id, endpoint_id, event_id, attempted_at, status_code, error, latency_ms, response_body
    FROM webhook_attempts;
DROP TABLE webhook_attempts;
ALTER TABLE webhook_attempts_new RENAME TO webhook_attempts;
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint_id, event_id);

CREATE TABLE webhook_deliveries_new (
    endpoint_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    status          TEXT NOT NULL,           -- 'pending' | 'delivered' | 'failed'
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
INSERT INTO webhook_deliveries_new (endpoint_id, event_id, status, attempts, next_attempt_at,
                                    lease_until, lease_owner, created_at, updated_at)
    SELECT endpoint_id, event_id, status, attempts, next_attempt_at, lease_until, lease_owner,
           created_at, updated_at
    FROM webhook_deliveries;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries;
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (endpoint_id, next_attempt_at, event_id, lease_until)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id, lease_until)
    WHERE status = 'pending' AND lease_until > 0;
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (endpoint_id, status, event_id);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (status, updated_at);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);
