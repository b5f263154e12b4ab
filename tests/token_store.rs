//! The token stores under stress: a Redis outage (on a private `redis-server` this test
//! stops and starts again), records another backend wrote, and the SQLite file locked by
//! another process.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_private_redis_stops_and_comes_back_on_the_same_port() {
    let mut redis = PrivateRedis::start().await;
    let port = redis.port();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut connection)
        .await
        .unwrap();
    redis.stop().await;
    assert!(!redis.is_running());
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection()
        )
        .await
        .is_ok_and(|c| c.is_err()),
        "a stopped server refuses connections"
    );
    redis.restart().await;
    assert_eq!(redis.port(), port);
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = ::redis::cmd("GET")
        .arg("k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(value, None, "nothing survives a stop: persistence is off");
}
