//! The harness itself: real redis-server and prometheus start, answer and stop.

use crate::support;

use std::time::Duration;

use support::servers::{PrometheusServer, RedisServer, http_get_ok};

#[test]
fn redis_server_starts_answers_and_restarts_with_a_new_run_id() {
    let mut redis = RedisServer::start();
    let mut con = redis.client();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let info = |con: &mut redis::Connection| -> String {
        let text: String = redis::cmd("INFO").arg("server").query(con).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let first = info(&mut con);
    redis.restart();
    let mut con = redis.client();
    assert_ne!(first, info(&mut con), "a restart must give a new run_id");
    redis.stop();
    assert!(
        redis::Client::open(redis.url())
            .unwrap()
            .get_connection()
            .is_err()
    );
}

#[test]
fn prometheus_starts_and_stops() {
    let mut prom = PrometheusServer::start(&[], Duration::from_millis(500));
    assert!(http_get_ok(prom.port(), "/-/ready"));
    prom.stop();
    assert!(!http_get_ok(prom.port(), "/-/ready"));
}
