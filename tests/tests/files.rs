//! Files (issue 21) on real relays over real QUIC: round trips of the
//! boundary sizes to every device, 1:1 and in a group; bad input refused
//! with nothing written; downloads resumed after an interruption and
//! across a relay restart; the relay's limit enforced before upload; what
//! the relay's disk and mailboxes show.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use sotto_core::{
    App, AppError, FILE_BLOB_LEN, FILE_CHUNK_DATA, FileCache, FileError, FileInfo, FileKey,
    FileTarget, OutgoingFile, RelayConnection, Rotation, download_file, padded_chunks, save_file,
    seal_chunk, upload_file,
};
use sotto_proto::Blob;
use sotto_tests::teams::{key, team, tokens_relay};
use sotto_tests::{TestRelay, clock_of, contains, directory_bytes, relay_addr};

/// Bytes nobody could guess from elsewhere: a marker, then a counter.
fn content(size: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut i: u32 = 0;
    while out.len() < size {
        out.extend_from_slice(b"PLAINTEXT-RUN-");
        out.extend_from_slice(&i.to_le_bytes());
        out.push(seed);
        i += 1;
    }
    out.truncate(size);
    out
}

async fn link(existing: &mut App, homes: &Path, name: &str, relay: &TestRelay) -> App {
    let code = existing.device_add().await.unwrap();
    let home = homes.join(name);
    let (mut new, confirm) = App::join_link(
        &home,
        key(&home),
        &code.code,
        None,
        Some(name),
        clock_of(&relay.clock),
    )
    .await
    .unwrap();
    existing.device_approve(&confirm, None).await.unwrap();
    new.sync().await.unwrap();
    new
}

async fn send(app: &mut App, to: &FileTarget, name: &str, bytes: &[u8]) -> String {
    let mut reader = bytes;
    let mut noop = |_| {};
    let sent = app
        .send_file(
            to,
            OutgoingFile {
                reader: &mut reader,
                size: bytes.len() as u64,
                name: name.to_owned(),
                media_type: "application/octet-stream".into(),
                caption: format!("here is {name}"),
                thumbnail: Vec::new(),
                source: None,
            },
            &mut noop,
        )
        .await
        .unwrap();
    assert!(sent.delivered);
    hex::encode(sent.id)
}

/// Saves file `id` on `app` into a fresh directory and checks it.
async fn check_saved(app: &mut App, id: &str, name: &str, bytes: &[u8]) {
    let out = tempfile::tempdir().unwrap();
    let id = app.resolve_message_id(id).unwrap();
    let mut noop = |_| {};
    let path = app
        .save_file(&id, Some(out.path()), &mut noop)
        .await
        .unwrap();
    assert_eq!(path, out.path().join(name));
    let saved = std::fs::read(&path).unwrap();
    assert_eq!(saved.len(), bytes.len(), "{name}");
    assert_eq!(Sha256::digest(&saved), Sha256::digest(bytes), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_boundary_sizes_reach_every_device_one_to_one_and_in_a_group() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();
    alice
        .group_create("ops", &["bob".to_owned()], Rotation::default())
        .await
        .unwrap();
    bob.sync().await.unwrap();
    let mut bob2 = link(&mut bob, homes.path(), "bob2", &relay).await;
    let mut alice2 = link(&mut alice, homes.path(), "alice2", &relay).await;
    for app in [&mut alice, &mut bob] {
        app.sync().await.unwrap();
    }
    let sizes = [
        0usize,
        1,
        64 * 1024 - 1,
        64 * 1024,
        64 * 1024 + 1,
        10 * 1024 * 1024,
    ];
    let mut sent = Vec::new();
    for (n, size) in sizes.into_iter().enumerate() {
        let bytes = content(size, n as u8);
        let name = format!("secret-report-{size}.bin");
        let direct = send(&mut alice, &FileTarget::Member("bob".into()), &name, &bytes).await;
        let group_name = format!("group-secret-{size}.bin");
        let group = send(
            &mut alice,
            &FileTarget::Group("ops".into()),
            &group_name,
            &bytes,
        )
        .await;
        sent.push((direct, name, group, group_name, bytes));
    }
    for app in [&mut bob, &mut bob2, &mut alice2] {
        app.sync().await.unwrap();
    }
    for (direct, name, group, group_name, bytes) in &sent {
        // Every device gets every message; the 10 MiB file is saved on
        // fewer of them, to keep the test fast.
        let big = bytes.len() > 1024 * 1024;
        for app in [&mut bob, &mut bob2] {
            let history = app.history("alice").unwrap();
            let message = history.iter().find(|m| &m.id == direct).unwrap();
            let file = message.file.as_ref().unwrap();
            assert_eq!(
                (file.name.as_str(), file.size),
                (name.as_str(), bytes.len() as u64)
            );
            assert_eq!(file.sha256, hex::encode(Sha256::digest(bytes)));
            assert_eq!(message.text, format!("here is {name}"));
            check_saved(app, direct, name, bytes).await;
        }
        // The group's file reaches bob's devices and alice's other one.
        for (n, app) in [&mut bob, &mut bob2, &mut alice2].into_iter().enumerate() {
            let history = app.group_history("ops").unwrap();
            let message = history.iter().find(|m| &m.id == group).unwrap();
            assert_eq!(message.file.as_ref().unwrap().name, *group_name);
            if !big || n == 2 {
                check_saved(app, group, group_name, bytes).await;
            }
        }
        // Alice's other device has her 1:1 file too.
        let history = alice2.history("bob").unwrap();
        assert!(history.iter().any(|m| &m.id == direct && m.file.is_some()));
        if !big {
            check_saved(&mut alice2, direct, name, bytes).await;
        }
    }
    // `files` lists them per conversation.
    assert_eq!(bob.files(Some("alice"), None).unwrap().len(), sizes.len());
    assert_eq!(bob.files(None, Some("ops")).unwrap().len(), sizes.len());

    // On the relay's disk: no file name, no plaintext run.
    scan_disk(&relay, &sent);
}

fn scan_disk(relay: &TestRelay, sent: &[(String, String, String, String, Vec<u8>)]) {
    let disk = directory_bytes(relay.dir.path());
    for (_, name, _, group_name, bytes) in sent {
        assert!(
            !contains(&disk, name.as_bytes()),
            "{name} on the relay's disk"
        );
        assert!(!contains(&disk, group_name.as_bytes()));
        if bytes.len() >= 64 {
            assert!(!contains(&disk, &bytes[..64]), "a plaintext run on disk");
        }
    }
    assert!(!contains(&disk, b"PLAINTEXT-RUN-"));
}

/// A relay without access tokens, and a connection to it.
async fn open_relay() -> (TestRelay, RelayConnection) {
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = false;
        // Small pages, so a download takes several round trips.
        c.limits.max_fetch_blobs = 3;
    })
    .await;
    let conn = RelayConnection::connect(&relay_addr(&relay), None)
        .await
        .unwrap();
    (relay, conn)
}

async fn upload(conn: &RelayConnection, bytes: &[u8]) -> FileInfo {
    let mut reader = bytes;
    let mut noop = |_| {};
    let mut info = upload_file(conn, &mut reader, bytes.len() as u64, 0, 0, &mut noop)
        .await
        .unwrap();
    info.name = "x.bin".into();
    info
}

/// Puts chunks as a sender would, except where `tamper` says otherwise.
async fn put_chunks(
    conn: &RelayConnection,
    key: &FileKey,
    bytes: &[u8],
    mut tamper: impl FnMut(u64, &mut Vec<u8>) -> bool,
) -> FileInfo {
    let size = bytes.len() as u64;
    let chunks = padded_chunks(size);
    let mailbox = key.mailbox().id();
    for index in 0..chunks {
        let start = (index as usize * FILE_CHUNK_DATA).min(bytes.len());
        let end = (start + FILE_CHUNK_DATA).min(bytes.len());
        let mut blob = seal_chunk(key, index, index + 1 == chunks, &bytes[start..end]).unwrap();
        if !tamper(index, &mut blob) {
            continue;
        }
        conn.put(&mailbox, &Blob::new(blob.into()).unwrap(), 0)
            .await
            .unwrap();
    }
    FileInfo {
        key: key.clone(),
        chunks,
        size,
        sha256: Sha256::digest(bytes).into(),
        name: "x.bin".into(),
        media_type: String::new(),
        thumbnail: Vec::new(),
        caption: String::new(),
        expires_at: 0,
    }
}

/// Downloads and saves; returns the error, and checks nothing was
/// written to the destination.
async fn fetch_and_save(conn: &RelayConnection, info: &FileInfo) -> (FileError, FileCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = FileCache::new(dir.path().join("cache"));
    let dest = dir.path().join("out.bin");
    let mut noop = |_| {};
    let error = match download_file(conn, &cache, "f", info, &mut noop).await {
        Err(error) => error,
        Ok(()) => save_file(&cache, "f", info, &dest).unwrap_err(),
    };
    assert!(!dest.exists(), "nothing at the destination after {error}");
    // Only the cache: no stray temporary file beside the destination.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cache"], "{error}");
    // The cache lives on while the caller looks (the dir is leaked).
    let _ = dir.keep();
    (error, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_are_refused_with_typed_errors_and_nothing_is_written() {
    let (_relay, conn) = open_relay().await;
    let bytes = content(5 * FILE_CHUNK_DATA + 10, 1);

    // A corrupted chunk: refused at its index; what came before is kept.
    let key = FileKey::random().unwrap();
    let info = put_chunks(&conn, &key, &bytes, |index, blob| {
        if index == 3 {
            blob[100] ^= 0x40;
        }
        true
    })
    .await;
    let (error, cache) = fetch_and_save(&conn, &info).await;
    assert!(matches!(error, FileError::BadChunk { index: 3 }), "{error}");
    assert!(
        error
            .to_string()
            .contains("corrupted, or written by someone else")
    );
    assert_eq!(cache.state("f").unwrap().chunks, 3);

    // A missing chunk in the middle: the next one sits at its index.
    let key = FileKey::random().unwrap();
    let info = put_chunks(&conn, &key, &bytes, |index, _| index != 2).await;
    let (error, _) = fetch_and_save(&conn, &info).await;
    assert!(matches!(error, FileError::BadChunk { index: 2 }), "{error}");

    // The last chunks missing (not uploaded yet, or expired).
    let key = FileKey::random().unwrap();
    let info = put_chunks(&conn, &key, &bytes, |index, _| index < 4).await;
    let (error, _) = fetch_and_save(&conn, &info).await;
    assert!(
        matches!(error, FileError::Missing { have: 4, count: 6 }),
        "{error}"
    );

    // A message whose hash is not the file's.
    let mut info = upload(&conn, &bytes).await;
    info.sha256[0] ^= 1;
    let (error, _) = fetch_and_save(&conn, &info).await;
    assert!(matches!(error, FileError::HashMismatch), "{error}");

    // A message whose chunk count is not the file's.
    let mut info = upload(&conn, &bytes).await;
    info.chunks += 1;
    let (error, _) = fetch_and_save(&conn, &info).await;
    assert!(matches!(error, FileError::CountMismatch { .. }), "{error}");

    // Someone who learnt the mailbox ID writes into it after the sender.
    let info = upload(&conn, &bytes).await;
    let stranger = RelayConnection::connect(&relay_addr(&_relay), None)
        .await
        .unwrap();
    stranger
        .put(
            &info.mailbox().id(),
            &Blob::new(vec![7u8; FILE_BLOB_LEN].into()).unwrap(),
            0,
        )
        .await
        .unwrap();
    let (error, _) = fetch_and_save(&conn, &info).await;
    assert!(
        matches!(error, FileError::ForeignChunk { count: 6 }),
        "{error}"
    );

    // And the good one, for contrast, with an existing destination refused.
    let info = upload(&conn, &bytes).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = FileCache::new(dir.path().join("cache"));
    let mut noop = |_| {};
    download_file(&conn, &cache, "g", &info, &mut noop)
        .await
        .unwrap();
    let dest = dir.path().join("taken");
    std::fs::write(&dest, b"mine").unwrap();
    assert!(matches!(
        save_file(&cache, "g", &info, &dest),
        Err(FileError::Exists(_))
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), b"mine");
    let dest = dir.path().join("ok");
    save_file(&cache, "g", &info, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_where_it_stopped_across_a_relay_restart() {
    let (mut relay, conn) = open_relay().await;
    let bytes = content(40 * FILE_CHUNK_DATA + 123, 2);
    let info = upload(&conn, &bytes).await;
    // The relay sees only 64 KiB blobs in the file mailbox, the padded
    // count of them.
    let mailbox = info.mailbox();
    let (mut after, mut blobs) = (0, 0);
    loop {
        let page = conn.fetch(&mailbox, after, 0).await.unwrap();
        for stored in &page.blobs {
            assert_eq!(stored.blob.len(), FILE_BLOB_LEN);
            after = stored.seq;
            blobs += 1;
        }
        if !page.more {
            break;
        }
    }
    assert_eq!(blobs, info.chunks);
    assert!(info.chunks > 41, "padded: {}", info.chunks);
    conn.close().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = FileCache::new(dir.path().join("cache"));

    // Stopped once at least 10 chunks are in: the future is dropped
    // mid-transfer, as a killed process or a lost network would leave it.
    let conn = RelayConnection::connect(&relay_addr(&relay), None)
        .await
        .unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let notify = stop.clone();
    let mut progress = move |done: u64| {
        if done >= 10 * FILE_CHUNK_DATA as u64 {
            notify.notify_one();
        }
    };
    tokio::select! {
        biased;
        result = download_file(&conn, &cache, "f", &info, &mut progress) => {
            panic!("the download was to be interrupted, it ended: {result:?}");
        }
        () = stop.notified() => {}
    }
    conn.close().await;
    let kept = cache.state("f").unwrap();
    assert!(kept.chunks >= 10 && kept.chunks < info.chunks, "{kept:?}");
    assert!(!kept.complete);

    // The relay restarts; the download goes on from where it stopped.
    relay.restart().await;
    let conn = RelayConnection::connect(&relay_addr(&relay), None)
        .await
        .unwrap();
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let seen = first.clone();
    let mut progress = move |done: u64| {
        let _ = seen.compare_exchange(u64::MAX, done, Ordering::SeqCst, Ordering::SeqCst);
    };
    download_file(&conn, &cache, "f", &info, &mut progress)
        .await
        .unwrap();
    // The first page after resuming already counts the kept chunks.
    let resumed_at = first.load(Ordering::SeqCst);
    assert!(
        resumed_at > kept.chunks * FILE_CHUNK_DATA as u64,
        "resumed at {resumed_at}, {} chunks were kept",
        kept.chunks
    );
    let state = cache.state("f").unwrap();
    assert!(state.complete && state.chunks == info.chunks);
    let dest = dir.path().join("out.bin");
    save_file(&cache, "f", &info, &dest).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_relays_limit_is_refused_before_upload() {
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = true;
        c.limits.mailbox_max_blobs = 8;
    })
    .await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut alice = members.swap_remove(0);
    let bytes = content(9 * FILE_CHUNK_DATA, 3);
    let mut reader = bytes.as_slice();
    let mut noop = |_| {};
    let error = alice
        .send_file(
            &FileTarget::Member("bob".into()),
            OutgoingFile {
                reader: &mut reader,
                size: bytes.len() as u64,
                name: "big.bin".into(),
                media_type: String::new(),
                caption: String::new(),
                thumbnail: Vec::new(),
                source: None,
            },
            &mut noop,
        )
        .await
        .unwrap_err();
    let limit = 8 * FILE_CHUNK_DATA as u64;
    assert!(
        matches!(error, AppError::File(FileError::TooBig { size, limit: l }) if size == bytes.len() as u64 && l == limit),
        "{error}"
    );
    assert!(error.to_string().contains(&limit.to_string()), "{error}");
    // Nothing was read from the file, nothing queued.
    assert_eq!(reader.len(), bytes.len());
    assert!(alice.history("bob").unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_deletes_a_file_early_and_a_delete_for_everyone_takes_its_key() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let bytes = content(3 * FILE_CHUNK_DATA, 4);
    let id = send(
        &mut alice,
        &FileTarget::Member("bob".into()),
        "gone.bin",
        &bytes,
    )
    .await;
    bob.sync().await.unwrap();
    let id_bob = bob.resolve_message_id(&id).unwrap();
    // Not bob's to delete.
    assert!(matches!(
        bob.delete_file(&id_bob).await,
        Err(AppError::Engine(sotto_core::EngineError::Action(
            sotto_core::ActionError::NotAuthor
        )))
    ));
    let id_alice = alice.resolve_message_id(&id).unwrap();
    assert_eq!(alice.delete_file(&id_alice).await.unwrap(), 3);
    let out = tempfile::tempdir().unwrap();
    let mut noop = |_| {};
    let error = bob
        .save_file(&id_bob, Some(out.path()), &mut noop)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            AppError::File(FileError::Missing { have: 0, count: 3 })
        ),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);

    // Deleted for everyone: the file and its key go from every device.
    alice
        .change_message(&id, sotto_core::Change::Delete)
        .await
        .unwrap();
    bob.sync().await.unwrap();
    for (app, id) in [(&alice, &id_alice), (&bob, &id_bob)] {
        let history = app
            .history(if app.handle() == "bob" {
                "alice"
            } else {
                "bob"
            })
            .unwrap();
        let message = history.iter().find(|m| m.id == hex::encode(id)).unwrap();
        assert!(message.deleted && message.file.is_none());
        assert!(matches!(
            app.file_info(id),
            Err(AppError::Engine(sotto_core::EngineError::Action(
                sotto_core::ActionError::UnknownMessage(_)
            )))
        ));
        assert!(app.files(None, None).unwrap().is_empty());
    }
}

/// Blobs in a file mailbox, as its owner reads them.
async fn blobs_in(conn: &RelayConnection, info: &FileInfo) -> u64 {
    let mailbox = info.mailbox();
    let (mut after, mut blobs) = (0, 0);
    loop {
        let page = conn.fetch(&mailbox, after, 0).await.unwrap();
        for stored in &page.blobs {
            after = stored.seq;
            blobs += 1;
        }
        if !page.more {
            return blobs;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_a_relay_restart_resumes_where_it_stopped_and_goes_once() {
    let mut relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    // 200 real chunks: with 64 puts in flight, ~130 are still to be put
    // when the relay goes; the record moves every 64 stored.
    let bytes = content(200 * FILE_CHUNK_DATA - 7, 5);
    let path = homes.path().join("resumed.bin");
    std::fs::write(&path, &bytes).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();

    // Once 70 chunks are stored, the relay restarts under the upload.
    let stop = Arc::new(tokio::sync::Notify::new());
    let notify = stop.clone();
    let mut progress = move |done: u64| {
        if done >= 70 * FILE_CHUNK_DATA as u64 {
            notify.notify_one();
        }
    };
    let to = FileTarget::Member("bob".into());
    {
        let send = alice.send_file(
            &to,
            OutgoingFile {
                reader: &mut reader,
                size: bytes.len() as u64,
                name: "resumed.bin".into(),
                media_type: String::new(),
                caption: "once".into(),
                thumbnail: Vec::new(),
                source: Some(path.clone()),
            },
            &mut progress,
        );
        // The relay restarts while the upload runs on.
        let restart = async {
            stop.notified().await;
            relay.restart().await;
        };
        let (sent, ()) = tokio::join!(send, restart);
        let error = sent.unwrap_err();
        assert!(
            matches!(error, AppError::File(FileError::Net(_)) | AppError::Net(_)),
            "{error}"
        );
    }
    // The restarted relay may listen on another port (the test harness's
    // doing, not the upload's).
    for app in [&mut alice, &mut bob] {
        app.client().set_relay(relay_addr(&relay));
    }
    // Nothing was sent; the upload is recorded with what was stored.
    assert!(alice.history("bob").unwrap_or_default().is_empty());
    let pending = alice.pending_uploads().unwrap();
    assert_eq!(pending.len(), 1);
    let recorded = pending[0].stored;
    assert!(
        recorded.chunks >= 64 && recorded.chunks < pending[0].info.chunks,
        "{recorded:?}"
    );
    let mailbox = pending[0].info.mailbox().id();

    // The next sync goes on from there and sends the message once.
    alice.sync().await.unwrap();
    assert!(alice.pending_uploads().unwrap().is_empty());
    bob.sync().await.unwrap();
    let files = bob.files(Some("alice"), None).unwrap();
    assert_eq!(files.len(), 1, "one message");
    assert_eq!(files[0].text, "once");
    let id = bob.resolve_message_id(&files[0].id).unwrap();
    let info = bob.file_info(&id).unwrap();
    // The same mailbox, each chunk stored once: resumed, not started over.
    assert_eq!(info.mailbox().id(), mailbox);
    let conn = bob.client().connect().await.unwrap();
    assert_eq!(blobs_in(&conn, &info).await, info.chunks);
    conn.close().await;
    check_saved(&mut bob, &files[0].id, "resumed.bin", &bytes).await;
    // A second sync sends nothing more.
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(bob.files(Some("alice"), None).unwrap().len(), 1);
}

/// A PNG of `width` × `height`.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 77])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_carries_a_small_thumbnail_inline_and_other_files_none() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let image = png(1200, 900);
    let thumbnail = sotto_core::file_thumbnail(std::io::Cursor::new(&image)).unwrap();
    let mut reader = image.as_slice();
    let mut noop = |_| {};
    let sent = alice
        .send_file(
            &FileTarget::Member("bob".into()),
            OutgoingFile {
                reader: &mut reader,
                size: image.len() as u64,
                name: "photo.png".into(),
                media_type: "image/png".into(),
                caption: String::new(),
                thumbnail: thumbnail.clone(),
                source: None,
            },
            &mut noop,
        )
        .await
        .unwrap();
    let text = send(
        &mut alice,
        &FileTarget::Member("bob".into()),
        "a.txt",
        b"hi",
    )
    .await;
    bob.sync().await.unwrap();
    let id = bob.resolve_message_id(&hex::encode(sent.id)).unwrap();
    let got = bob.file_thumbnail(&id).unwrap().unwrap();
    assert_eq!(got, thumbnail);
    assert!(got.len() <= sotto_core::FILE_MAX_THUMBNAIL);
    let decoded = image::load_from_memory_with_format(&got, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (160, 120));
    let history = bob.history("alice").unwrap();
    let shown = history.iter().find(|m| m.id == hex::encode(id)).unwrap();
    assert!(shown.file.as_ref().unwrap().has_thumbnail);
    let text = bob.resolve_message_id(&text).unwrap();
    assert_eq!(bob.file_thumbnail(&text).unwrap(), None);
    // What the relay stores of the image is ciphertext only.
    assert!(!contains(&directory_bytes(relay.dir.path()), &got[..64]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_mailbox_a_stranger_wrote_into_goes_afresh_under_a_new_key() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let bytes = content(70 * FILE_CHUNK_DATA, 6);
    let path = homes.path().join("contested.bin");
    std::fs::write(&path, &bytes).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();
    // The sending stops (its future dropped, as a killed process would)
    // once the record moved.
    let stop = Arc::new(tokio::sync::Notify::new());
    let notify = stop.clone();
    let mut progress = move |done: u64| {
        if done >= 65 * FILE_CHUNK_DATA as u64 {
            notify.notify_one();
        }
    };
    let to = FileTarget::Member("bob".into());
    tokio::select! {
        biased;
        result = alice.send_file(
            &to,
            OutgoingFile {
                reader: &mut reader,
                size: bytes.len() as u64,
                name: "contested.bin".into(),
                media_type: String::new(),
                caption: String::new(),
                thumbnail: Vec::new(),
                source: Some(path.clone()),
            },
            &mut progress,
        ) => panic!("the upload was to stop, it ended: {result:?}"),
        () = stop.notified() => {}
    }
    let pending = alice.pending_uploads().unwrap();
    assert_eq!(pending.len(), 1);
    let old = pending[0].info.clone();
    // Someone who learnt the mailbox ID puts a blob after the chunks.
    let stranger = alice.client().connect().await.unwrap();
    stranger
        .put(
            &old.mailbox().id(),
            &Blob::new(vec![9u8; FILE_BLOB_LEN].into()).unwrap(),
            0,
        )
        .await
        .unwrap();
    // The resumed upload finds a blob that is not its next chunk: the
    // mailbox is emptied and the file goes afresh under a new key.
    alice.sync().await.unwrap();
    assert!(alice.pending_uploads().unwrap().is_empty());
    assert_eq!(blobs_in(&stranger, &old).await, 0);
    stranger.close().await;
    bob.sync().await.unwrap();
    let files = bob.files(Some("alice"), None).unwrap();
    assert_eq!(files.len(), 1);
    let id = bob.resolve_message_id(&files[0].id).unwrap();
    assert_ne!(
        bob.file_info(&id).unwrap().mailbox().id(),
        old.mailbox().id()
    );
    check_saved(&mut bob, &files[0].id, "contested.bin", &bytes).await;
}
