//! `sotto-relay audit` on a real data directory, through the real binary.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use sotto_proto::{Blob, Bucket, MailboxId, SlotId};
use sotto_relay::{Config, Server, SledStorage, Storage};

fn audit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sotto-relay"))
        .arg("audit")
        .arg("--data")
        .arg(dir)
        .args(args)
        .env("SOTTO_LOG", "warn")
        .output()
        .unwrap()
}

fn blob(bucket: Bucket, fill: u8) -> Blob {
    Blob::new(Bytes::from(vec![fill; bucket.size()])).unwrap()
}

/// A data dir laid out by a real first start (certificate, bootstrap code,
/// database), then filled directly through the storage backend.
async fn filled_data_dir() -> (tempfile::TempDir, Vec<MailboxId>) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    Server::start(config).await.unwrap().shutdown().await;

    let storage = SledStorage::open(&dir.path().join("db")).unwrap();
    let mailboxes: Vec<MailboxId> = (1..=3u8)
        .map(|i| MailboxId::for_key_bytes(&[i; 32]))
        .collect();
    // 3 + 2 + 1 blobs: five of 1 KiB, one of 16 KiB; expiries 60 s apart.
    let mut expires_at = 1_800_000_000;
    for (i, mailbox) in mailboxes.iter().enumerate() {
        for _ in 0..(3 - i) {
            expires_at += 60;
            storage
                .append(mailbox, &blob(Bucket::K1, 0xAB), 0, expires_at)
                .unwrap();
        }
    }
    storage
        .append(&mailboxes[0], &blob(Bucket::K16, 0xCD), 0, 1_800_000_000)
        .unwrap();
    // One acked blob: the ack removes its expiry-index entry with it
    // (issue 18 item 9), so nothing dangles.
    let gone = storage
        .append(&mailboxes[2], &blob(Bucket::K4, 0xEF), 0, 1_900_000_000)
        .unwrap();
    storage.delete(&mailboxes[2], &[gone]).unwrap();

    // The relay checks slot signatures before storing; the backend does not.
    let slot = SlotId::from_bytes([7; 32]);
    let value = Bytes::from(vec![0x5A; 4096]);
    storage
        .slot_put(
            &slot,
            &sotto_relay::storage::SlotRecord {
                version: 1,
                owner: [9; 32],
                value,
            },
        )
        .unwrap();
    storage.flush().unwrap();
    (dir, mailboxes)
}

#[tokio::test]
async fn audit_reports_counts_and_sizes_but_no_mailbox_id() {
    let (dir, mailboxes) = filled_data_dir().await;

    let out = audit(dir.path(), &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["mailboxes"], 3);
    assert_eq!(json["blobs"]["count"], 7);
    assert_eq!(json["blobs"]["bytes"], 6 * 1024 + 16 * 1024);
    assert_eq!(json["blobs"]["max_per_mailbox"], 4);
    assert_eq!(
        json["blobs"]["sizes"],
        serde_json::json!([{"size": 1024, "count": 6}, {"size": 16384, "count": 1}])
    );
    assert_eq!(json["expiry"]["oldest"], 1_800_000_000u64);
    assert_eq!(json["expiry"]["newest"], 1_800_000_000u64 + 6 * 60);
    assert_eq!(json["expiry"]["oldest_utc"], "2027-01-15 08:00 UTC");
    assert_eq!(json["expiry"]["all_minute_aligned"], true);
    assert_eq!(json["expiry"]["index_entries"], 7);
    assert_eq!(json["expiry"]["dangling"], 0);
    assert_eq!(json["slots"]["count"], 1);
    assert_eq!(json["slots"]["bytes"], 4096);
    assert_eq!(json["stored_bytes"], 6 * 1024 + 16 * 1024 + 4096);
    assert!(json["db_size_on_disk"].as_u64().unwrap() > 0);
    assert_eq!(json["corrupt_records"], 0);
    assert_eq!(json["default_tree_entries"], 0);
    assert_eq!(json["bootstrap_code_unused"], true);
    let fingerprint = json["certificate_fingerprint"].as_str().unwrap();
    let cert = std::fs::read(dir.path().join("relay-cert.der")).unwrap();
    assert_eq!(fingerprint, hex::encode(sotto_relay::fingerprint(&cert)));
    let files: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for expected in ["bootstrap-code", "relay-cert.der", "relay-key.der"] {
        assert!(files.contains(&expected), "{files:?}");
    }
    assert!(json.get("mailbox_prefixes").is_none());

    let code = sotto_relay::read_bootstrap_code(dir.path())
        .unwrap()
        .unwrap();
    let text = audit(dir.path(), &[]);
    let verbose = audit(dir.path(), &["--verbose"]);
    let verbose_json = audit(dir.path(), &["--json", "--verbose"]);
    for out in [&out, &text, &verbose, &verbose_json] {
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout).to_lowercase();
        for mailbox in &mailboxes {
            let full = hex::encode(mailbox.as_bytes());
            assert!(!stdout.contains(&full), "full mailbox ID printed");
            // Not even half of one.
            assert!(!stdout.contains(&full[..32]), "mailbox ID half printed");
        }
        assert!(!stdout.contains(&code), "bootstrap code printed");
    }
    let verbose = String::from_utf8_lossy(&verbose.stdout);
    for mailbox in &mailboxes {
        assert!(verbose.contains(&mailbox.short()), "{verbose}");
    }
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("mailboxes holding blobs: 3"), "{text}");
    assert!(text.contains("unused bootstrap code: yes"), "{text}");
}

#[tokio::test]
async fn audit_refuses_a_locked_database_and_a_missing_one() {
    let (dir, _) = filled_data_dir().await;
    let held = SledStorage::open(&dir.path().join("db")).unwrap();
    let out = audit(dir.path(), &["--json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stop the relay first or copy the data dir"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    drop(held);

    let empty = tempfile::tempdir().unwrap();
    let out = audit(empty.path(), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no relay database"));
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "the audit created files"
    );
}
