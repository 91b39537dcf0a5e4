//! The SQLite backend: the conformance suite, reopening, and acknowledged writes surviving
//! `kill -9` (the test binary re-executes itself as the writing child).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use store::{Backend, Bytes, RangeOptions, Store, StoreConfig, conformance};

fn backend(path: &Path) -> Backend {
    Backend::Sqlite {
        path: path.to_path_buf(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store::open(
        &backend(&dir.path().join("db/skiff.db")),
        &StoreConfig::default(),
    )
    .await
    .expect("open");
    conformance::run_all(store).await;
}

/// Reopening keeps data, the revision counter, history and the compaction point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_state_history_and_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("skiff.db");
    let (first, updated, compacted) = {
        let store = store::open(&backend(&path), &StoreConfig::default())
            .await
            .expect("open");
        let first = store
            .create("/registry/a", Bytes::from_static(b"1"))
            .await
            .expect("create");
        store
            .create("/registry/b", Bytes::from_static(b"1"))
            .await
            .expect("create");
        let updated = store
            .update("/registry/a", Bytes::from_static(b"2"), first.mod_revision)
            .await
            .expect("update");
        let compacted = first.mod_revision + 1;
        store.compact(compacted).await.expect("compact");
        (first, updated, compacted)
    };
    // The writer thread stops once the store is dropped; give it a moment to close its handle.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let store = store::open(&backend(&path), &StoreConfig::default())
        .await
        .expect("reopen");
    assert_eq!(
        store.current_revision().await.expect("revision"),
        updated.mod_revision
    );
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        compacted
    );
    assert_eq!(
        store.get("/registry/a").await.expect("get"),
        Some(updated.clone())
    );
    let past = store
        .range(
            "/registry/",
            RangeOptions {
                revision: Some(compacted),
                ..Default::default()
            },
        )
        .await
        .expect("range at a past revision after reopening");
    assert_eq!(past.kvs[0], first);
    let next = store
        .create("/registry/c", Bytes::from_static(b"1"))
        .await
        .expect("create after reopen");
    assert_eq!(
        next.mod_revision,
        updated.mod_revision + 1,
        "the revision counter continues"
    );
}

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD_DB";
const ROUNDS: usize = 20;
const CHILD_WRITERS: usize = 16;

/// Acknowledged writes survive SIGKILL at random moments, the store reopens every time, its
/// revision counter never goes backwards, and it accepts writes again.
#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        crash_child(PathBuf::from(path));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("skiff.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let exe = std::env::current_exe().expect("current_exe");
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_writes_survive_sigkill",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .env("SKIFF_STORE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill only once writes are flowing, after a random extra delay.
        let mut lines = Vec::new();
        loop {
            let line = lines_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("child acknowledged no write in 60 s");
            let started = line.starts_with("ACK ");
            lines.push(line);
            if started {
                break;
            }
        }
        let delay = random() % 400;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");
        reader.join().expect("reader thread");
        lines.extend(lines_rx.try_iter());
        let before = acked.len();
        for line in lines {
            // A line cut short by the kill has no trailing newline and is not counted by
            // `lines()` only when complete; a partial "ACK" line fails to parse and is skipped.
            let mut fields = line.split(' ');
            if let (Some("ACK"), Some(key), Some(revision)) =
                (fields.next(), fields.next(), fields.next())
                && let Ok(revision) = revision.parse()
            {
                acked.insert(key.to_string(), revision);
            }
        }
        assert!(
            acked.len() > before,
            "round {round}: the child acknowledged nothing"
        );
        runtime.block_on(verify(&path, &acked, round));
    }
}

async fn verify(path: &Path, acked: &BTreeMap<String, i64>, round: usize) {
    let store = store::open(&backend(path), &StoreConfig::default())
        .await
        .expect("reopen after SIGKILL");
    let newest = acked.values().copied().max().unwrap_or(0);
    let current = store.current_revision().await.expect("revision");
    assert!(
        current >= newest,
        "round {round}: revision went back from {newest} to {current}"
    );
    let stored = store
        .range("/crash/", RangeOptions::default())
        .await
        .expect("range");
    let stored: BTreeMap<_, _> = stored
        .kvs
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    for (key, revision) in acked {
        let kv = stored
            .get(key)
            .unwrap_or_else(|| panic!("round {round}: acknowledged write {key} is lost"));
        assert_eq!(
            kv.mod_revision, *revision,
            "round {round}: {key} has the wrong revision"
        );
        assert_eq!(
            kv.value.as_ref(),
            key.as_bytes(),
            "round {round}: {key} has the wrong value"
        );
    }
    let after = store
        .create(&format!("/after-crash/{round}"), Bytes::from_static(b"x"))
        .await
        .expect("write after reopen");
    assert!(after.mod_revision > current);
}

/// The child: writes as fast as it can from several tasks, printing each acknowledged write.
fn crash_child(path: PathBuf) {
    let round = std::env::var("SKIFF_STORE_CRASH_ROUND").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store: Arc<dyn Store> = store::open(&backend(&path), &StoreConfig::default())
            .await
            .expect("child open");
        let mut tasks = Vec::new();
        for writer in 0..CHILD_WRITERS {
            let store = store.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{round}/{writer}/{i}");
                    let kv = store
                        .create(&key, Bytes::from(key.clone().into_bytes()))
                        .await
                        .expect("child write");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key} {}", kv.mod_revision).expect("stdout");
                    out.flush().expect("stdout");
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
