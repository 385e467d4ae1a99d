//! Many clients at once against one pool: every answered allocation is distinct, exhaustion is
//! exact, retries with one key allocate once, and the pool's stats agree with its records.

use crate::support::{self, Server, assert_error_code};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Barrier;

const CLIENTS: usize = 64;

/// `n` tokio tasks, each sending one allocation request to `pool` as soon as all are ready
/// (with `key` as Idempotency-Key if given). Returns every answer.
async fn allocate_at_once(
    s: &Server,
    pool: &str,
    n: usize,
    key: Option<&str>,
) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = s.client.clone();
        let url = s.url(&format!("/api/v1/pools/{pool}/allocations"));
        let token = s.token.clone();
        let key = key.map(str::to_string);
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let mut req = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"owner": format!("client-{i}")}));
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k);
            }
            barrier.wait().await;
            support::json_of(req.send().await.expect("request")).await
        });
    }
    tasks.join_all().await
}

fn created_addresses(answers: &[(StatusCode, Value)]) -> Vec<String> {
    answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .map(|(_, body)| body["address"].as_str().expect("address").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_get_distinct_addresses() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let answers = allocate_at_once(&s, "lan", CLIENTS, None).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    let got = created_addresses(&answers);
    let distinct: BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        distinct.len(),
        CLIENTS,
        "an address was handed out twice: {got:?}"
    );
    // Next-free order holds under concurrency: exactly the 64 lowest free addresses.
    let want: BTreeSet<String> = (2..2 + CLIENTS).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(distinct, want.iter().collect());
    // Each client's owner is on the address it got.
    let owners: BTreeSet<&str> = answers
        .iter()
        .filter_map(|(_, b)| b["owner"].as_str())
        .collect();
    assert_eq!(owners.len(), CLIENTS);

    let stats = s.stats("lan").await;
    assert_eq!(stats["allocated"], CLIENTS);
    assert_eq!(stats["available"], 254 - 1 - CLIENTS);
    s.assert_stats_match_records("lan").await;
    let (status, page) = s
        .get("/api/v1/addresses?pool=lan&status=allocated&limit=500")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(CLIENTS));
    for rec in page["items"].as_array().into_iter().flatten() {
        let ip = rec["address"].as_str().expect("address");
        let answered = answers
            .iter()
            .find(|(_, b)| b["address"] == ip)
            .expect("answered");
        assert_eq!(rec["owner"], answered.1["owner"], "{ip}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_exhaust_a_slash_28_exactly() {
    let s = Server::start().await;
    s.pool("small", "10.0.0.0/28").await;
    let answers = allocate_at_once(&s, "small", CLIENTS, None).await;
    let created = created_addresses(&answers);
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status != StatusCode::CREATED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        created.len(),
        13,
        "14 usable, the gateway kept back: {created:?}"
    );
    assert_eq!(refused.len(), CLIENTS - 13);
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_error_code(*status, body, StatusCode::CONFLICT, "exhausted");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("small"), "{msg}");
    }
    let distinct: BTreeSet<String> = created.iter().cloned().collect();
    let want: BTreeSet<String> = (2..=14).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(distinct, want);

    let stats = s.stats("small").await;
    assert_eq!(stats["total"], 14);
    assert_eq!(stats["allocated"], 13);
    assert_eq!(stats["reserved"], 1);
    assert_eq!(stats["quarantine"], 0);
    assert_eq!(stats["available"], 0);
    assert_eq!(stats["utilization"], 1.0);
    s.assert_stats_match_records("small").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_idempotency_key_allocate_once() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let answers = allocate_at_once(&s, "lan", 32, Some("order-42")).await;
    let mut got = BTreeSet::new();
    for (status, body) in &answers {
        assert!(status.is_success(), "{status} {body}");
        got.insert(body["address"].as_str().expect("address").to_string());
    }
    assert_eq!(got.len(), 1, "one key, several addresses: {got:?}");
    assert_eq!(s.stats("lan").await["allocated"], 1);
    s.assert_stats_match_records("lan").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_releases_and_allocations_keep_the_pool_consistent() {
    let s = Server::start().await;
    s.pool("lan", "10.0.0.0/24").await;
    let first = created_addresses(&allocate_at_once(&s, "lan", 32, None).await);
    assert_eq!(first.len(), 32);

    // Release those 32 while 32 other clients allocate.
    let mut releases = tokio::task::JoinSet::new();
    for ip in first.clone() {
        let client = s.client.clone();
        let url = s.url(&format!("/api/v1/addresses/{ip}/allocation"));
        let token = s.token.clone();
        releases.spawn(async move {
            support::json_of(
                client
                    .delete(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("release"),
            )
            .await
        });
    }
    let allocations = allocate_at_once(&s, "lan", 32, None).await;
    for (status, body) in releases.join_all().await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "available");
    }
    let second = created_addresses(&allocations);
    assert_eq!(second.len(), 32);
    // Released addresses wait at the back of the line: the new clients got fresh ones.
    let first: BTreeSet<String> = first.into_iter().collect();
    let second: BTreeSet<String> = second.into_iter().collect();
    assert_eq!(second.len(), 32);
    assert!(
        first.is_disjoint(&second),
        "a just-released address was handed out again"
    );

    let stats = s.stats("lan").await;
    assert_eq!(stats["allocated"], 32);
    s.assert_stats_match_records("lan").await;
}
