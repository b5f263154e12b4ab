-- Fewer index entries per delivered callback; the PostgreSQL migration of the same name
-- says why. (SQLite compares text byte by byte already: no collation to change.)
DROP INDEX IF EXISTS webhook_deliveries_by_status;
DROP INDEX IF EXISTS webhook_deliveries_by_age;
DROP INDEX IF EXISTS webhook_deliveries_by_event;
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (endpoint_id, event_id)
    WHERE status = 'failed';
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at)
    WHERE status <> 'pending';
