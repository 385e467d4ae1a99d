//! `weft backup` while 64 clients allocate: the copy is taken by the running server without
//! stopping it, opens, passes redb's integrity check, and holds every allocation that was
//! acknowledged before the backup began.

use crate::support::{Server, WEFT};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft::ipam::Status;
use weft::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_holds_every_acknowledged_allocation() {
    let server = Arc::new(Server::start().await);
    server.pool("big", "10.128.0.0/16").await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (server, acked, stop) = (server.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = server
                    .post("/api/v1/pools/big/allocations", json!({"owner": "load"}))
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let ip = body["address"].as_str().unwrap().to_string();
                acked.lock().unwrap().push(ip);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        before.len() > 64,
        "the load is running: {} so far",
        before.len()
    );
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("weft-backup.redb");
    let data_dir = server.data_dir();
    let (f, d) = (file.clone(), data_dir.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(WEFT)
            .arg("backup")
            .arg(&f)
            .arg("--data-dir")
            .arg(&d)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("while serving"), "{said}");
    let during = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(
        acked.lock().unwrap().len() > during,
        "the server kept allocating after the backup"
    );

    // Restore: the copy is a database of its own.
    assert!(Store::check_integrity(&file).unwrap(), "integrity check");
    let restored = Store::open(&file).unwrap();
    restored
        .read(|r| {
            for ip in &before {
                let rec = r.address(ip.parse().unwrap())?;
                assert_eq!(
                    rec.status,
                    Status::Allocated,
                    "{ip} missing from the backup"
                );
            }
            Ok(())
        })
        .unwrap();
    restored.close();

    // A second backup to the same file is refused and leaves it as it was.
    let again = std::process::Command::new(WEFT)
        .arg("backup")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}
