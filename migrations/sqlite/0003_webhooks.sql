-- The webhook outbox (see src/webhooks). An event is recorded once; a delivery is one
-- event for one endpoint, with its state and lease; an attempt is one HTTP try.

CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    app_id          TEXT NOT NULL,
    merchant_id     TEXT,                    -- NULL: the app's own endpoint
    kind            TEXT NOT NULL,           -- 'standard' | 'pusher'
    url             TEXT NOT NULL,
    description     TEXT,
    events          TEXT,                    -- JSON array of filters; NULL: every event
    enabled         INTEGER NOT NULL,
    disabled_reason TEXT,
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_until  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    failing_since   INTEGER,                 -- first failure since the last success (ms)
    last_success_at INTEGER
);
CREATE INDEX webhook_endpoints_by_owner ON webhook_endpoints (app_id, merchant_id);

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,            -- evt_ + UUIDv7: sorts by time
    app_id      TEXT NOT NULL,
    merchant_id TEXT,
    event_type  TEXT NOT NULL,
    channel     TEXT,
    payload     TEXT NOT NULL,               -- the exact body every attempt sends
    created_at  INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL REFERENCES webhook_events (id),
    status          TEXT NOT NULL,           -- 'pending' | 'delivered' | 'failed'
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (lease_until)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (endpoint_id, status, event_id);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (status, updated_at);
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id            INTEGER PRIMARY KEY,
    endpoint_id   TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    attempted_at  INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    latency_ms    INTEGER NOT NULL,
    response_body TEXT,
    FOREIGN KEY (endpoint_id, event_id)
        REFERENCES webhook_deliveries (endpoint_id, event_id) ON DELETE CASCADE
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint_id, event_id);
