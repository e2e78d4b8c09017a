//! Files through the real binaries (issue 21): a `sotto-relay` process
//! and `sotto` commands in temp homes; alice has a second device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::path::Path;

fn lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn link_laptop(alice: &Path, laptop: &Path) {
    let link = ok(&sotto(alice, &["device", "add"]));
    let joined = lines(&ok(&sotto(
        laptop,
        &["--json", "join", link.trim(), "--name", "laptop"],
    )));
    let confirm = joined[0]["confirm"].as_str().unwrap().to_owned();
    ok(&sotto(alice, &["device", "approve", &confirm]));
    ok(&sotto(laptop, &["sync"]));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_file_goes_to_a_member_and_a_group_and_is_saved_under_a_safe_name() {
    let (_relay, homes, alice, bob) = team_of_two();
    let laptop = homes.path().join("alice-laptop");
    link_laptop(&alice, &laptop);
    let files = tempfile::tempdir().unwrap();
    // A hostile-looking name: a leading dot, an escape character.
    let name = ".hidden\u{1b}[31m report.txt";
    let path = files.path().join(name);
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();

    let sent = lines(&ok(&sotto(
        &alice,
        &[
            "--json",
            "send",
            "bob",
            "--file",
            path.to_str().unwrap(),
            "the logs",
        ],
    )));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sent[0]["status"], "sent");
    assert_eq!(sent[0]["size"], bytes.len());

    // sync --json: the message with its file object.
    for home in [&bob, &laptop] {
        let synced = lines(&ok(&sotto(home, &["--json", "sync"])));
        let message = synced.iter().find(|m| m["id"] == id.as_str()).unwrap();
        assert_eq!(message["text"], "the logs");
        let file = &message["file"];
        assert_eq!(file["id"], id.as_str());
        assert_eq!(file["name"], name);
        assert_eq!(file["size"], bytes.len());
        assert_eq!(file["sha256"], sha256_hex(&bytes));
        assert_eq!(file["media_type"], "text/plain");
        assert_eq!(file["has_thumbnail"], false);
    }
    // The human history shows name, size and the ID to save it by.
    let human = ok(&sotto(&bob, &["history", "alice"]));
    assert!(
        human.contains("[file hidden_[31m report.txt (195.3 KiB)"),
        "{human}"
    );
    assert!(!human.contains('\u{1b}'), "no escape reaches the terminal");
    let listed = ok(&sotto(&bob, &["files", "alice"]));
    assert!(
        listed.contains(&id[..8]) && listed.contains("195.3 KiB"),
        "{listed}"
    );

    // Saved into a directory: the sanitized name, inside it, hash equal.
    let out = tempfile::tempdir().unwrap();
    let saved = lines(&ok(&sotto(
        &bob,
        &[
            "--json",
            "file",
            "save",
            &id[..8],
            out.path().to_str().unwrap(),
        ],
    )));
    let written = out.path().join("hidden_[31m report.txt");
    assert_eq!(saved[0]["path"], written.to_str().unwrap());
    assert_eq!(std::fs::read(&written).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
    // Never over an existing file.
    fails(
        &sotto(&bob, &["file", "save", &id[..8], written.to_str().unwrap()]),
        4,
        "exists",
    );
    assert_eq!(std::fs::read(&written).unwrap(), bytes);
    // An unknown ID: a clear refusal.
    fails(
        &sotto(&bob, &["file", "save", "00000000"]),
        4,
        "no message with ID",
    );

    // A group: one upload; both of bob's... bob and alice's laptop get it.
    ok(&sotto(&alice, &["group", "create", "ops", "bob"]));
    ok(&sotto(&bob, &["sync"]));
    ok(&sotto(&laptop, &["sync"]));
    let empty = files.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let sent = lines(&ok(&sotto(
        &alice,
        &[
            "--json",
            "group",
            "send",
            "ops",
            "--file",
            empty.to_str().unwrap(),
        ],
    )));
    let group_id = sent[0]["id"].as_str().unwrap().to_owned();
    for home in [&bob, &laptop] {
        let synced = lines(&ok(&sotto(home, &["--json", "sync"])));
        let message = synced
            .iter()
            .find(|m| m["id"] == group_id.as_str())
            .unwrap();
        assert_eq!(message["group"], "ops");
        assert_eq!(message["file"]["size"], 0);
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("chosen-name");
        ok(&sotto(
            home,
            &["file", "save", &group_id, target.to_str().unwrap()],
        ));
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }
    let listed = lines(&ok(&sotto(&bob, &["--json", "files", "--group", "ops"])));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["fetched"], true);
}

#[test]
fn small_files_are_fetched_as_they_arrive_when_the_setting_says_so() {
    let (_relay, homes, alice, bob) = team_of_two();
    let shown = lines(&ok(&sotto(
        &bob,
        &["--json", "settings", "--auto-fetch-mib", "1"],
    )));
    assert_eq!(shown[0]["auto_fetch_mib"], 1);
    let small = homes.path().join("small.txt");
    std::fs::write(&small, vec![b'a'; 1000]).unwrap();
    let big = homes.path().join("big.bin");
    std::fs::write(&big, vec![b'b'; 1024 * 1024 + 1]).unwrap();
    ok(&sotto(
        &alice,
        &["send", "bob", "--file", small.to_str().unwrap()],
    ));
    ok(&sotto(
        &alice,
        &["send", "bob", "--file", big.to_str().unwrap()],
    ));
    ok(&sotto(&bob, &["sync"]));
    let listed = lines(&ok(&sotto(&bob, &["--json", "files", "alice"])));
    let fetched: Vec<(String, bool)> = listed
        .iter()
        .map(|f| {
            (
                f["file"]["name"].as_str().unwrap().to_owned(),
                f["fetched"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fetched,
        [
            ("small.txt".to_owned(), true),
            ("big.bin".to_owned(), false)
        ]
    );
}

/// `sotto ARGS` stopped for good once `bytes` moved (the debug build's
/// test hook), then killed with SIGKILL: a crash mid-transfer.
fn killed_after(home: &Path, args: &[&str], bytes: u64) {
    use std::io::BufRead as _;
    let mut child = command(home, args)
        .env("SOTTO_TEST_STALL_AFTER_BYTES", bytes.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("sotto: test stall") {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        said.push(line);
    }
    let status = child.wait().unwrap();
    panic!("`sotto {args:?}` ended ({status}) before the stall: {said:?}");
}

/// A few MiB nobody could guess.
fn big_bytes() -> Vec<u8> {
    (0..6 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[test]
fn a_save_killed_midway_resumes_and_writes_nothing_until_done() {
    let (_relay, homes, alice, bob) = team_of_two();
    let path = homes.path().join("big.bin");
    let bytes = big_bytes();
    std::fs::write(&path, &bytes).unwrap();
    let sent = lines(&ok(&sotto(
        &alice,
        &["--json", "send", "bob", "--file", path.to_str().unwrap()],
    )));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    ok(&sotto(&bob, &["sync"]));

    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big.bin");
    let state = bob.join("files").join(format!("{id}.state"));
    // Killed (SIGKILL) once 1 MiB is on disk.
    killed_after(
        &bob,
        &["file", "save", &id, dest.to_str().unwrap()],
        1024 * 1024,
    );
    let kept = std::fs::read(&state).unwrap();
    let chunks = u64::from_be_bytes(kept[..8].try_into().unwrap());
    assert!(chunks >= 16, "{chunks} chunks were kept");
    assert_eq!(kept[16], 0, "not complete when killed");
    assert!(
        !dest.exists(),
        "nothing at the destination before the hash checked"
    );

    // Run again: it goes on from the kept chunks and saves the file.
    ok(&sotto(&bob, &["file", "save", &id, dest.to_str().unwrap()]));
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let done = std::fs::read(&state).unwrap();
    assert_eq!(done[16], 1);
}

#[test]
fn a_send_killed_midway_resumes_at_the_next_sync_and_its_message_goes_once() {
    let (_relay, homes, alice, bob) = team_of_two();
    let path = homes.path().join("upload.bin");
    let bytes = big_bytes();
    std::fs::write(&path, &bytes).unwrap();
    // Killed (SIGKILL) once 5 MiB are stored on the relay.
    killed_after(
        &alice,
        &["send", "bob", "--file", path.to_str().unwrap(), "caption"],
        5 * 1024 * 1024,
    );
    // The unfinished upload is listed; no message has gone.
    let listed = lines(&ok(&sotto(&alice, &["--json", "files"])));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["uploading"], true);
    assert_eq!(listed[0]["to"], "bob");
    assert_eq!(listed[0]["file"]["name"], "upload.bin");
    // The record moved at 64 chunks of 65,516 bytes.
    assert!(listed[0]["stored_bytes"].as_u64().unwrap() >= 64 * 65_516);
    let synced = lines(&ok(&sotto(&bob, &["--json", "sync"])));
    assert!(synced.iter().all(|m| m["file"].is_null()), "{synced:?}");

    // alice's next sync goes on and sends the message; once.
    ok(&sotto(&alice, &["sync"]));
    assert!(
        ok(&sotto(&alice, &["files"]))
            .lines()
            .all(|l| !l.contains("uploading"))
    );
    ok(&sotto(&alice, &["sync"]));
    let synced = lines(&ok(&sotto(&bob, &["--json", "sync"])));
    let files: Vec<_> = synced.iter().filter(|m| !m["file"].is_null()).collect();
    assert_eq!(files.len(), 1, "{synced:?}");
    assert_eq!(files[0]["text"], "caption");
    assert_eq!(files[0]["file"]["sha256"], sha256_hex(&bytes));
    let id = files[0]["id"].as_str().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("got.bin");
    ok(&sotto(&bob, &["file", "save", id, dest.to_str().unwrap()]));
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[test]
fn an_image_comes_with_a_thumbnail_that_can_be_written_out() {
    let (_relay, homes, alice, bob) = team_of_two();
    let path = homes.path().join("photo.png");
    let image = image::RgbImage::from_fn(800, 400, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 40])
    });
    image.save(&path).unwrap();
    let sent = lines(&ok(&sotto(
        &alice,
        &["--json", "send", "bob", "--file", path.to_str().unwrap()],
    )));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    let synced = lines(&ok(&sotto(&bob, &["--json", "sync"])));
    let message = synced.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(message["file"]["media_type"], "image/png");
    assert_eq!(message["file"]["has_thumbnail"], true);
    let out = tempfile::tempdir().unwrap();
    let thumb = out.path().join("thumb.jpg");
    ok(&sotto(
        &bob,
        &["file", "thumbnail", &id, thumb.to_str().unwrap()],
    ));
    let jpeg = std::fs::read(&thumb).unwrap();
    assert!(jpeg.len() <= 16 * 1024 && jpeg.starts_with(&[0xff, 0xd8]));
    // Never over an existing file.
    fails(
        &sotto(&bob, &["file", "thumbnail", &id, thumb.to_str().unwrap()]),
        4,
        "exists",
    );
}
