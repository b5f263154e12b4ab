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
