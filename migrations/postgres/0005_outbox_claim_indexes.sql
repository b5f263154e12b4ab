-- The outbox's delivery rows without foreign keys, and indexes a claim can walk per
-- endpoint (see src/webhooks/store.rs, `claim`).
--
-- Foreign keys: every delivery and attempt row is written by the outbox writer right
-- beside (or after) the rows it refers to, and the only deletions (an endpoint's, and
-- pruning) remove children explicitly in the same transaction. The checks cost a
-- lookup per row on the busiest path, about an eighth of the server's time per
-- delivered callback, and guarded nothing the code does not already.
ALTER TABLE webhook_attempts DROP CONSTRAINT IF EXISTS webhook_attempts_endpoint_id_event_id_fkey;
ALTER TABLE webhook_deliveries DROP CONSTRAINT IF EXISTS webhook_deliveries_endpoint_id_fkey;
ALTER TABLE webhook_deliveries DROP CONSTRAINT IF EXISTS webhook_deliveries_event_id_fkey;

-- A claim takes, for each endpoint, at most its per-endpoint share of due messages
-- (oldest first) after counting the leases it holds: both are short walks of these
-- indexes, whatever the backlog. Before, due messages were found by time across all
-- endpoints and numbered per endpoint, so every claim read every due message.
DROP INDEX IF EXISTS webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due
    ON webhook_deliveries (endpoint_id, next_attempt_at, event_id, lease_until)
    WHERE status = 'pending';
-- Only rows ever leased (lease_until > 0): the in-flight and queued ones, and leases a
-- dead node left.
DROP INDEX IF EXISTS webhook_deliveries_leased;
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id, lease_until)
    WHERE status = 'pending' AND lease_until > 0;
