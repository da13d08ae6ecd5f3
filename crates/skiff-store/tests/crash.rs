//! Acknowledged writes survive `kill -9`, and the file opens after it.
//!
//! The test re-runs its own binary as a child (selected by an environment variable)
//! that writes from many tasks at once and prints each key once its write returns.
//! The parent kills the child with SIGKILL mid-stream, reopens the store and checks
//! that every printed key is there with its value. Several rounds reuse one file,
//! so each round also opens a file left by a crash.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use skiff_store::{EmbeddedStore, ReadView, Store};

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD";

fn value_for(key: &str) -> Bytes {
    Bytes::from(format!("value of {key} {}", "x".repeat(200)))
}

/// In the child: write until killed. In a normal test run: nothing.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, round) = spec.split_once('|').expect("path|round");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(path.as_ref()).unwrap());
        let mut tasks = Vec::new();
        for writer in 0..16 {
            let store = Arc::clone(&store);
            let round = round.to_owned();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{round}/{writer}/{i}");
                    store.create(&key, value_for(&key)).await.unwrap();
                    // One write per line, after the store acknowledged it.
                    println!("{key}");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// The next complete line naming a written key. A line the kill cut short has no
/// newline and does not count; neither does the test harness's own output.
fn acknowledged_line(stdout: &mut impl BufRead) -> Option<String> {
    loop {
        let mut line = Vec::new();
        if stdout.read_until(b'\n', &mut line).unwrap() == 0 {
            return None;
        }
        if line.pop() != Some(b'\n') {
            return None;
        }
        if line.starts_with(b"/crash/") {
            return Some(String::from_utf8(line).unwrap());
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{round}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        // Let it get well into writing, then kill it mid-stream.
        while seen < 300 + round * 200 {
            let key = acknowledged_line(&mut stdout).expect("child exited early");
            acknowledged.push(key);
            seen += 1;
        }
        child.kill().unwrap(); // SIGKILL
        // Lines the child printed before it died were acknowledged too.
        while let Some(key) = acknowledged_line(&mut stdout) {
            acknowledged.push(key);
        }
        child.wait().unwrap();

        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = EmbeddedStore::open(&path).expect("reopen after SIGKILL");
            for key in &acknowledged {
                let kv = store
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("acknowledged {key} lost"));
                assert_eq!(kv.value, value_for(key), "{key} corrupted");
            }
            let revision = store.current_revision().await.unwrap();
            assert!(revision >= acknowledged.len() as i64);
        });
    }
}
