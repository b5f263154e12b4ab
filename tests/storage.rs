//! The node's database on both backends: the same migrations, the same stores.

mod common;

use std::time::Duration;

use payrelay::db::{Backend, Db};
use payrelay::merchants::MerchantStore;
use payrelay::tokens::{SqliteTokens, Subject, TokenStore};

/// What the merchant and token stores must do, whatever the database.
async fn stores_work_on(db: Db) {
    let merchants = MerchantStore::new(db.clone());
    let key = merchants.create_key("1", "m1").await.unwrap();
    // A second key for the same merchant (the merchant row already exists).
    let second = merchants.create_key("1", "m1").await.unwrap();
    let found = merchants.find_key(&key.api_key).await.unwrap().unwrap();
    assert_eq!(
        (found.app_id.as_str(), found.merchant_id.as_str()),
        ("1", "m1")
    );
    assert_eq!(merchants.list_keys("1", Some("m1")).await.unwrap().len(), 2);
    assert_eq!(merchants.list_keys("1", None).await.unwrap().len(), 2);
    assert!(
        merchants
            .list_keys("1", Some("m2"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        merchants
            .revoke_key("1", &second.key_id)
            .await
            .unwrap()
            .as_deref(),
        Some("m1")
    );
    assert!(!merchants.is_key_live("1", &second.key_id).await.unwrap());
    assert!(merchants.is_key_live("1", &key.key_id).await.unwrap());

    let tokens = SqliteTokens::new(db.clone());
    let subject = Subject::Client {
        merchant_id: "m1".into(),
        user_id: Some("u1".into()),
        minted_with: Some(key.key_id.clone()),
    };
    let minted = tokens
        .mint("1", &subject, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        tokens.lookup(&minted.token).await.unwrap().unwrap().subject,
        subject
    );
    let user = tokens
        .mint("1", &Subject::User("42".into()), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        tokens
            .lookup(&user.token)
            .await
            .unwrap()
            .unwrap()
            .access_user(),
        Some("42")
    );
    assert_eq!(tokens.revoke_user("1", "42").await.unwrap().len(), 1);
    assert!(tokens.revoke(&minted.token).await.unwrap().is_some());
    assert!(tokens.lookup(&minted.token).await.unwrap().unwrap().revoked);
}

#[tokio::test]
async fn sqlite_stores() {
    let db = Db::open("sqlite::memory:").await.unwrap();
    assert_eq!(db.backend(), Backend::Sqlite);
    stores_work_on(db).await;
}

#[tokio::test]
async fn postgres_stores_and_migrations() {
    let Some(pg) = common::PgDatabase::create().await else {
        return;
    };
    let db = Db::open(&pg.url).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    stores_work_on(db.clone()).await;
    db.close().await;
    // A second node opening the same database applies nothing twice.
    let again = Db::open(&pg.url).await.unwrap();
    again.close().await;
}

mod outbox {
    //! The outbox's claim and deletions on both backends, at the store's level.

    use payrelay::db::Db;
    use payrelay::webhooks::endpoint::{EventFilter, Kind};
    use payrelay::webhooks::store::{
        Claimed, EndpointRow, Health, NewDelivery, NewEvent, Next, OutboxStore, Outcome,
    };

    const NOW: i64 = 1_000_000;

    async fn endpoint(store: &OutboxStore, id: &str, health: Health, enabled: bool) {
        let mut row = EndpointRow::fresh(
            id.into(),
            "1".into(),
            Some("m1".into()),
            Kind::Standard,
            format!("https://example.test/{id}"),
            EventFilter::all(),
            "whsec_test".into(),
        );
        row.enabled = enabled;
        match health {
            Health::Proven => row.last_success_at = Some(1),
            Health::Failing => row.failing_since = Some(1),
            Health::Unproven => {}
        }
        store.insert_endpoint(&row).await.unwrap();
    }

    /// `count` events for `endpoint`, due at `due` (ms) in order, leased by `owner` until
    /// `lease_until` (0: not leased).
    async fn messages(
        store: &OutboxStore,
        endpoint: &str,
        prefix: &str,
        count: usize,
        due: i64,
        lease_until: i64,
        owner: &str,
    ) {
        let events: Vec<NewEvent> = (0..count)
            .map(|i| NewEvent {
                id: format!("evt_{prefix}{i:05}"),
                app_id: "1".into(),
                merchant_id: Some("m1".into()),
                event_type: "trade".into(),
                channel: Some("private-merchant.m1".into()),
                payload: "{}".into(),
                created_at: due + i as i64,
                deliveries: vec![NewDelivery {
                    endpoint_id: endpoint.into(),
                    lease_until,
                }],
            })
            .collect();
        store.write_batch(&events, &[], owner, NOW).await.unwrap();
    }

    /// What a claim leased, sorted (it returns rows in whatever order it updated them).
    fn ids(claimed: &[Claimed]) -> Vec<(&str, &str)> {
        let mut ids: Vec<_> = claimed
            .iter()
            .map(|c| (c.endpoint_id.as_str(), c.event_id.as_str()))
            .collect();
        ids.sort();
        ids
    }

    async fn claims_fairly_whatever_the_backlog(db: Db) {
        let store = OutboxStore::new(db);
        endpoint(&store, "ep_a", Health::Proven, true).await;
        endpoint(&store, "ep_b", Health::Proven, true).await;
        endpoint(&store, "ep_new", Health::Unproven, true).await;
        endpoint(&store, "ep_off", Health::Proven, false).await;
        // ep_a: three messages another node holds, then a backlog of 2 000 due ones.
        messages(
            &store,
            "ep_a",
            "a_held",
            3,
            NOW - 5000,
            NOW + 10_000,
            "other",
        )
        .await;
        messages(&store, "ep_a", "a", 2000, NOW - 4000, 0, "me").await;
        // ep_b: a lease that ran out (its node died), ten due, and one not due yet.
        messages(&store, "ep_b", "b_dead", 1, NOW - 6000, NOW - 1, "dead").await;
        messages(&store, "ep_b", "b", 10, NOW - 3000, 0, "me").await;
        messages(&store, "ep_b", "b_later", 1, NOW + 60_000, 0, "me").await;
        messages(&store, "ep_new", "n", 5, NOW - 3000, 0, "me").await;
        messages(&store, "ep_off", "o", 5, NOW - 3000, 0, "me").await;

        // The oldest of every endpoint before a second of any: a limit of two takes one
        // of each (ep_a holds three of its four already, so it has one to give; ep_b's
        // dead lease is its oldest).
        let claimed = store
            .claim(NOW, NOW + 10_000, "me", 4, 2, Health::Proven)
            .await
            .unwrap();
        assert_eq!(
            ids(&claimed),
            vec![("ep_a", "evt_a00000"), ("ep_b", "evt_b_dead00000")]
        );
        assert_eq!(claimed[0].attempts, 0);
        // Then ep_b's next three, oldest first; nothing of the unproven or disabled
        // endpoints, nothing not due.
        let claimed = store
            .claim(NOW, NOW + 10_000, "me", 4, 100, Health::Proven)
            .await
            .unwrap();
        assert_eq!(
            ids(&claimed),
            vec![
                ("ep_b", "evt_b00000"),
                ("ep_b", "evt_b00001"),
                ("ep_b", "evt_b00002"),
            ]
        );
        // Everything's share is held now.
        let again = store
            .claim(NOW, NOW + 10_000, "me", 4, 100, Health::Proven)
            .await
            .unwrap();
        assert!(again.is_empty(), "{:?}", ids(&again));
        // The limit cuts across endpoints, the oldest rank first.
        let unproven = store
            .claim(NOW, NOW + 10_000, "me", 1, 100, Health::Unproven)
            .await
            .unwrap();
        assert_eq!(ids(&unproven), vec![("ep_new", "evt_n00000")]);
        assert!(
            store
                .claim(NOW, NOW + 10_000, "me", 4, 100, Health::Failing)
                .await
                .unwrap()
                .is_empty()
        );
        // When the leases run out, every message is claimable again, oldest first, three
        // ranks of two endpoints for a limit of six.
        let later = NOW + 20_000;
        let claimed = store
            .claim(later, later + 10_000, "me", 4, 6, Health::Proven)
            .await
            .unwrap();
        assert_eq!(
            ids(&claimed),
            vec![
                ("ep_a", "evt_a_held00000"),
                ("ep_a", "evt_a_held00001"),
                ("ep_a", "evt_a_held00002"),
                ("ep_b", "evt_b00000"),
                ("ep_b", "evt_b00001"),
                ("ep_b", "evt_b_dead00000"),
            ]
        );

        // Deleting an endpoint takes its deliveries and attempts, and only its own.
        assert!(store.delete_endpoint("1", "ep_a").await.unwrap());
        assert!(!store.delete_endpoint("1", "ep_a").await.unwrap());
        assert!(store.counts("ep_a").await.unwrap().is_empty());
        assert_eq!(store.counts("ep_b").await.unwrap()["pending"], 12);
        assert!(
            store
                .messages("ep_a", None, None, 10)
                .await
                .unwrap()
                .is_empty()
        );

        // A 410 disables an endpoint only while it still has the URL that answered.
        assert!(
            !store
                .disable_endpoint("ep_b", "gone", NOW, Some("https://example.test/old"))
                .await
                .unwrap()
        );
        assert_eq!(store.counts("ep_b").await.unwrap()["pending"], 12);
        assert!(
            store
                .disable_endpoint("ep_b", "gone", NOW, Some("https://example.test/ep_b"))
                .await
                .unwrap()
        );
        assert_eq!(store.counts("ep_b").await.unwrap()["failed"], 12);

        // An attempt this node had on the wire when the endpoint was disabled ends
        // after it: its answer is logged, and the message stays failed (disabling ended
        // the lease).
        let late = Outcome {
            endpoint_id: "ep_b".into(),
            event_id: "evt_b00000".into(),
            url: "https://example.test/ep_b".into(),
            attempted_at: later,
            status_code: Some(200),
            error: None,
            latency_ms: 3,
            response_body: None,
            attempts: 1,
            next: Next::Delivered,
            claimed: true,
        };
        store.write_batch(&[], &[late], "me", later).await.unwrap();
        let counts = store.counts("ep_b").await.unwrap();
        assert_eq!(counts["failed"], 12, "{counts:?}");
        assert!(!counts.contains_key("delivered"), "{counts:?}");
        let log = store
            .messages("ep_b", None, Some("evt_b00001"), 1)
            .await
            .unwrap();
        assert_eq!(log[0].id, "evt_b00000");
        assert_eq!(log[0].attempt_log.len(), 1);
        assert_eq!(log[0].attempt_log[0].status_code, Some(200));
    }

    /// One event for `endpoints` (all of merchant `merchant`), leased to "me".
    fn event_for(id: &str, merchant: &str, endpoints: &[&str]) -> NewEvent {
        NewEvent {
            id: id.into(),
            app_id: "1".into(),
            merchant_id: Some(merchant.into()),
            event_type: "trade".into(),
            channel: Some(format!("private-merchant.{merchant}")),
            payload: format!("{{\"id\":\"{id}\"}}"),
            created_at: NOW,
            deliveries: endpoints
                .iter()
                .map(|e| NewDelivery {
                    endpoint_id: (*e).into(),
                    lease_until: NOW + 10_000,
                })
                .collect(),
        }
    }

    fn outcome(endpoint: &str, event: &str, next: Next) -> Outcome {
        Outcome {
            endpoint_id: endpoint.into(),
            event_id: event.into(),
            url: format!("https://example.test/{endpoint}"),
            attempted_at: NOW,
            status_code: Some(200),
            error: None,
            latency_ms: 1,
            response_body: None,
            attempts: 1,
            next,
            claimed: false,
        }
    }

    async fn bodies(store: &OutboxStore, ids: &[&str]) -> Vec<String> {
        let mut found: Vec<String> = store.payloads(ids).await.unwrap().into_keys().collect();
        found.sort();
        found
    }

    async fn events_go_with_their_last_delivery(db: Db) {
        let store = OutboxStore::new(db);
        endpoint(&store, "ep_a", Health::Proven, true).await;
        endpoint(&store, "ep_b", Health::Proven, true).await;
        let mut other = EndpointRow::fresh(
            "ep_c".into(),
            "1".into(),
            Some("m2".into()),
            Kind::Standard,
            "https://example.test/ep_c".into(),
            EventFilter::all(),
            "whsec_test".into(),
        );
        other.last_success_at = Some(1);
        store.insert_endpoint(&other).await.unwrap();
        let events = [
            event_for("evt_shared", "m1", &["ep_a", "ep_b"]),
            event_for("evt_b_only", "m1", &["ep_b"]),
            event_for("evt_other", "m2", &["ep_c"]),
        ];
        store.write_batch(&events, &[], "me", NOW).await.unwrap();
        let all = ["evt_b_only", "evt_other", "evt_shared"];
        // ep_a delivered the shared event now; ep_b gave up on it ten seconds later.
        store
            .write_batch(
                &[],
                &[outcome("ep_a", "evt_shared", Next::Delivered)],
                "me",
                NOW,
            )
            .await
            .unwrap();
        store
            .write_batch(
                &[],
                &[outcome("ep_b", "evt_shared", Next::Failed)],
                "me",
                NOW + 10_000,
            )
            .await
            .unwrap();

        // Only ep_a's message is past the retention: the event stays for ep_b's.
        assert_eq!(store.prune(NOW + 1, 100).await.unwrap(), 1);
        assert!(store.counts("ep_a").await.unwrap().is_empty());
        assert_eq!(bodies(&store, &all).await, all);
        let log = store
            .messages("ep_b", Some("failed"), None, 10)
            .await
            .unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].attempt_log.len(), 1, "its attempts are kept");

        // Then ep_b's failed message goes, and the event with it; pending ones stay.
        assert_eq!(store.prune(NOW + 20_000, 100).await.unwrap(), 1);
        assert_eq!(bodies(&store, &all).await, ["evt_b_only", "evt_other"]);
        assert_eq!(store.prune(NOW + 20_000, 100).await.unwrap(), 0);

        // Deleting ep_b takes the event only it was sent, not another merchant's.
        assert!(store.delete_endpoint("1", "ep_b").await.unwrap());
        assert_eq!(bodies(&store, &all).await, ["evt_other"]);
        assert_eq!(store.counts("ep_c").await.unwrap()["pending"], 1);
    }

    #[tokio::test]
    async fn sqlite_events_go_with_their_last_delivery() {
        events_go_with_their_last_delivery(Db::open("sqlite::memory:").await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_events_go_with_their_last_delivery() {
        let Some(pg) = super::common::PgDatabase::create().await else {
            return;
        };
        let db = Db::open(&pg.url).await.unwrap();
        events_go_with_their_last_delivery(db.clone()).await;
        db.close().await;
    }

    #[tokio::test]
    async fn sqlite_claims_fairly_whatever_the_backlog() {
        claims_fairly_whatever_the_backlog(Db::open("sqlite::memory:").await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_claims_fairly_whatever_the_backlog() {
        let Some(pg) = super::common::PgDatabase::create().await else {
            return;
        };
        let db = Db::open(&pg.url).await.unwrap();
        claims_fairly_whatever_the_backlog(db.clone()).await;
        db.close().await;
    }
}

mod migration_0005 {
    //! Rebuilding the outbox tables without foreign keys keeps every row.

    use std::borrow::Cow;

    use payrelay::db::Db;
    use payrelay::webhooks::store::{Health, OutboxStore};
    use sqlx::migrate::Migrator;

    /// An endpoint with a delivered message (two attempts logged) and a pending one, as
    /// the schema before 0005 held them.
    const ROWS: &str = "
        INSERT INTO webhook_endpoints (id, app_id, merchant_id, kind, url, events, enabled,
            secret, created_at, updated_at, last_success_at)
        VALUES ('ep_1', '1', 'm1', 'standard', 'https://example.test/', NULL, TRUE,
            'whsec_x', 1, 1, 1);
        INSERT INTO webhook_events (id, app_id, merchant_id, event_type, channel, payload,
            created_at)
        VALUES ('evt_1', '1', 'm1', 'trade', 'private-merchant.m1', '{}', 1),
               ('evt_2', '1', 'm1', 'trade', 'private-merchant.m1', '{}', 2);
        INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts,
            next_attempt_at, created_at, updated_at)
        VALUES ('ep_1', 'evt_1', 'delivered', 2, 1, 1, 3),
               ('ep_1', 'evt_2', 'pending', 0, 2, 2, 2);
        INSERT INTO webhook_attempts (endpoint_id, event_id, attempted_at, status_code,
            latency_ms)
        VALUES ('ep_1', 'evt_1', 2, 500, 4), ('ep_1', 'evt_1', 3, 204, 5);";

    fn first_four(mut migrator: Migrator) -> Migrator {
        migrator.migrations = Cow::Owned(migrator.migrations[..4].to_vec());
        migrator
    }

    async fn rows_are_kept(db: Db) {
        let store = OutboxStore::new(db.clone());
        let counts = store.counts("ep_1").await.unwrap();
        assert_eq!((counts["delivered"], counts["pending"]), (1, 1));
        let log = store.messages("ep_1", None, None, 10).await.unwrap();
        assert_eq!(log.len(), 2);
        let codes: Vec<_> = log[1].attempt_log.iter().map(|a| a.status_code).collect();
        assert_eq!(codes, vec![Some(500), Some(204)]);
        let claimed = store
            .claim(10, 10_000, "me", 16, 10, Health::Proven)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].event_id, "evt_2");
        assert!(store.delete_endpoint("1", "ep_1").await.unwrap());
        assert!(store.counts("ep_1").await.unwrap().is_empty());
        db.close().await;
    }

    #[tokio::test]
    async fn sqlite_keeps_the_outbox_rows() {
        let dir = std::env::temp_dir().join(format!("payrelay-m5-{}", super::common::rand_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("outbox.db").display());
        {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            first_four(sqlx::migrate!("./migrations/sqlite"))
                .run(&pool)
                .await
                .unwrap();
            sqlx::raw_sql(ROWS).execute(&pool).await.unwrap();
            pool.close().await;
        }
        rows_are_kept(Db::open(&url).await.unwrap()).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn postgres_keeps_the_outbox_rows() {
        let Some(pg) = super::common::PgDatabase::create().await else {
            return;
        };
        {
            let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
            first_four(sqlx::migrate!("./migrations/postgres"))
                .run(&pool)
                .await
                .unwrap();
            sqlx::raw_sql(ROWS).execute(&pool).await.unwrap();
            pool.close().await;
        }
        rows_are_kept(Db::open(&pg.url).await.unwrap()).await;
    }
}

mod batch_plan {
    //! The PostgreSQL batch statement finds outcome rows by key, however its plan is made.
    //!
    //! A connection plans the statement once and keeps the plan until statistics change.
    //! Left to itself, PostgreSQL plans it on a fresh outbox as a sequential scan (or a
    //! walk of the partial index of pending rows, dead entries included) for every batch;
    //! the batch connections' settings must leave it the key lookups whatever the table
    //! holds when the plan is made.

    use payrelay::db::Db;
    use payrelay::webhooks::store::{BATCH_PLANNER_SETTINGS, POSTGRES_BATCH};
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Connection, Row};
    use std::str::FromStr;

    /// The generic plan (the one a connection keeps) of the batch statement, as
    /// `EXPLAIN` prints it, on a connection with `settings`.
    async fn generic_plan(url: &str, settings: &[(&str, &str)]) -> String {
        let options = PgConnectOptions::from_str(url)
            .unwrap()
            .options(settings.iter().copied());
        let mut conn = options.connect().await.unwrap();
        sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(&format!("PREPARE batch AS {POSTGRES_BATCH}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let rows = sqlx::query(
            "EXPLAIN EXECUTE batch(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, 'node', 0, '{ep_1}', '{evt_1}', '{delivered}', '{1}', '{0}', '{0}',
               '{200}', '{NULL}', '{1}', '{NULL}', '{ep_1}', '{true}', '{https://x.test}')",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The part of the plan that finds the outcomes' delivery rows.
    fn outcome_lookup(plan: &str) -> String {
        let start = plan.find("CTE outcomes").expect("an outcomes step");
        let end = plan[start..]
            .find("CTE health_changes")
            .map_or(plan.len(), |n| start + n);
        plan[start..end].to_string()
    }

    /// Whether each outcome's row is found by an index lookup on its event id (the
    /// primary key, or the event's index), and nothing else reads the table.
    fn found_by_key(plan: &str) -> bool {
        let lookup = outcome_lookup(plan);
        let keyed = lookup
            .lines()
            .any(|l| l.contains("Index Cond:") && l.contains("v.event_id"));
        keyed
            && !lookup.contains("Seq Scan")
            && !lookup.contains("Bitmap")
            && !lookup.contains("webhook_deliveries_due")
    }

    fn assert_by_key(plan: &str, when: &str) {
        assert!(
            found_by_key(plan),
            "{when}: the outcomes are not found by key:\n{}",
            outcome_lookup(plan)
        );
    }

    #[tokio::test]
    async fn postgres_batch_plan_finds_outcomes_by_key_whatever_the_statistics() {
        let Some(pg) = super::common::PgDatabase::create().await else {
            return;
        };
        let db = Db::open(&pg.url).await.unwrap();
        db.close().await;

        // Without the settings, a plan made on the fresh outbox does not use the key:
        // what this test guards against (if PostgreSQL ever plans it well by itself,
        // the settings can go).
        let unset = generic_plan(&pg.url, &[]).await;
        assert!(
            !found_by_key(&unset),
            "PostgreSQL now finds the outcomes by key unaided:\n{unset}"
        );
        assert_by_key(
            &generic_plan(&pg.url, &BATCH_PLANNER_SETTINGS).await,
            "a fresh outbox",
        );

        // Statistics of an outbox where almost nothing is pending: the partial index of
        // pending rows looks tiny.
        let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts,
               next_attempt_at, lease_until, lease_owner, created_at, updated_at)
             SELECT 'ep_1', 'evt_' || lpad(n::text, 8, '0'),
                    CASE WHEN n % 1000 = 0 THEN 'pending' ELSE 'delivered' END,
                    1, n, 0, NULL, n, n
             FROM generate_series(1, 20000) AS n;
             ANALYZE webhook_deliveries;",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        assert_by_key(
            &generic_plan(&pg.url, &BATCH_PLANNER_SETTINGS).await,
            "an analyzed outbox with few pending rows",
        );
    }
}

mod held_connections {
    //! The outbox batch's connections: reused without the pool's round trips, replaced
    //! when one breaks.

    use payrelay::db::HeldConnections;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use std::str::FromStr;

    /// Runs `sql` (one integer back) on `conn`, and gives the connection back.
    async fn query_on(
        mut conn: PgConnection,
        sql: &'static str,
    ) -> (PgConnection, Result<i32, sqlx::Error>) {
        let result = sqlx::query_scalar::<_, i32>(sql).fetch_one(&mut conn).await;
        (conn, result)
    }

    async fn backend_pid(held: &HeldConnections) -> Result<i32, sqlx::Error> {
        held.run(|conn| Box::pin(query_on(conn, "SELECT pg_backend_pid()")))
            .await
    }

    #[tokio::test]
    async fn postgres_held_connections_are_reused_and_replaced_when_broken() {
        let Some(pg) = super::common::PgDatabase::create().await else {
            return;
        };
        let held = HeldConnections::new(
            PgConnectOptions::from_str(&pg.url).unwrap(),
            std::time::Duration::from_millis(500),
        );
        let first = backend_pid(&held).await.unwrap();
        assert_eq!(
            backend_pid(&held).await.unwrap(),
            first,
            "kept for the next call"
        );

        // Two statements at once: two connections, both kept.
        let (a, b) = tokio::join!(
            held.run(|conn| Box::pin(query_on(conn, "SELECT pg_backend_pid() FROM pg_sleep(0.2)"))),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                backend_pid(&held).await
            }
        );
        assert_ne!(a.unwrap(), b.unwrap());

        // The server ends every backend of this database (a restart, as a kept
        // connection sees it): the next statement finds its connection broken and runs
        // on a fresh one; the broken ones are never used again.
        let admin = sqlx::PgPool::connect(&pg.url).await.unwrap();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        let fresh = backend_pid(&held)
            .await
            .expect("runs on a fresh connection");
        assert_ne!(fresh, first);
        let next = backend_pid(&held).await.expect("and on the next kept one");
        assert_eq!(backend_pid(&held).await.unwrap(), next, "kept again");

        // A statement the server refuses fails once, as it is (not run twice).
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let refused = held
            .run(|conn| {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(query_on(conn, "SELECT 1/0"))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A server that stops answering fails the statement at the timeout (once: it may
        // have run), and the next statement runs on a fresh connection. (Connections of
        // their own: `held` may still keep one the terminations broke.)
        let slow = HeldConnections::new(
            PgConnectOptions::from_str(&pg.url).unwrap(),
            std::time::Duration::from_millis(500),
        );
        let before = backend_pid(&slow).await.unwrap();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let started = std::time::Instant::now();
        let stuck = slow
            .run(|conn| {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(query_on(conn, "SELECT 1 FROM pg_sleep(5)"))
            })
            .await;
        let waited = started.elapsed();
        let error = stuck.expect_err("given up").to_string();
        assert!(error.contains("did not answer within 0.5 s"), "{error}");
        assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_ne!(backend_pid(&slow).await.unwrap(), before);
        slow.close().await;
        held.close().await;
    }
}
