use super::*;

fn info_for(key: &FileKey, size: u64) -> FileInfo {
    FileInfo {
        key: key.clone(),
        chunks: padded_chunks(size),
        size,
        sha256: [0; 32],
        name: "a.txt".into(),
        media_type: String::new(),
        thumbnail: Vec::new(),
        caption: String::new(),
        expires_at: 0,
    }
}

#[test]
fn padme_leaks_little_and_never_shrinks() {
    assert_eq!(padme(0), 0);
    assert_eq!(padme(1), 1);
    assert_eq!(padme(2), 2);
    assert_eq!(padme(9), 10);
    assert_eq!(padme(17), 18);
    for n in 1..5000u64 {
        let p = padme(n);
        assert!(p >= n && p < n + n / 8 + 2, "{n} -> {p}");
        assert!(padme(n + 1) >= p, "monotonic at {n}");
    }
    // Padded counts take few values: a 10 MiB file and its neighbours.
    assert_eq!(padme(161), 176);
    assert_eq!(padme(176), 176);
}

#[test]
fn chunks_of_boundary_sizes() {
    let c = CHUNK_DATA as u64;
    assert_eq!(real_chunks(0), 1);
    assert_eq!(real_chunks(1), 1);
    assert_eq!(real_chunks(c), 1);
    assert_eq!(real_chunks(c + 1), 2);
    assert_eq!(chunk_len(c + 1, 0), CHUNK_DATA);
    assert_eq!(chunk_len(c + 1, 1), 1);
    assert_eq!(chunk_len(c + 1, 2), 0);
    assert_eq!(chunk_len(0, 0), 0);
}

#[test]
fn a_chunk_opens_only_at_its_index_with_its_flag() {
    let key = FileKey::random().expect("key");
    let blob = seal_chunk(&key, 3, false, b"hello").expect("sealed");
    assert_eq!(blob.len(), BLOB_LEN);
    assert_eq!(
        &open_chunk(&key, 3, false, &blob).expect("opens")[..],
        b"hello"
    );
    assert!(matches!(
        open_chunk(&key, 2, false, &blob),
        Err(FileError::BadChunk { index: 2 })
    ));
    assert!(matches!(
        open_chunk(&key, 3, true, &blob),
        Err(FileError::BadChunk { .. })
    ));
    let other = FileKey::random().expect("key");
    assert!(matches!(
        open_chunk(&other, 3, false, &blob),
        Err(FileError::BadChunk { .. })
    ));
    // One flipped bit anywhere: refused.
    for at in [0, 4, 1000, BLOB_LEN - 1] {
        let mut bad = blob.clone();
        bad[at] ^= 1;
        assert!(
            matches!(
                open_chunk(&key, 3, false, &bad),
                Err(FileError::BadChunk { .. })
            ),
            "{at}"
        );
    }
    // Truncated or extended: refused.
    assert!(open_chunk(&key, 3, false, &blob[..BLOB_LEN - 1]).is_err());
}

#[test]
fn a_wrong_chunk_count_is_named() {
    let key = FileKey::random().expect("key");
    let size = 3 * CHUNK_DATA as u64;
    let mut info = info_for(&key, size);
    assert_eq!(info.chunks, 3);
    let last = seal_chunk(&key, 2, true, &vec![7; CHUNK_DATA]).expect("sealed");
    assert!(open_file_chunk(&info, 2, &last).is_ok());
    // The message says more chunks than there are: the final flag is early.
    info.chunks = 4;
    assert!(matches!(
        open_file_chunk(&info, 2, &last),
        Err(FileError::CountMismatch { count: 4 })
    ));
    // The message says fewer: chunk 1 is not the last.
    info.chunks = 2;
    let middle = seal_chunk(&key, 1, false, &vec![7; CHUNK_DATA]).expect("sealed");
    assert!(matches!(
        open_file_chunk(&info, 1, &middle),
        Err(FileError::CountMismatch { count: 2 })
    ));
    // Beyond the count: a foreign chunk.
    assert!(matches!(
        open_file_chunk(&info, 2, &last),
        Err(FileError::ForeignChunk { count: 2 })
    ));
}

#[test]
fn a_chunk_of_the_wrong_length_is_refused() {
    let key = FileKey::random().expect("key");
    let info = info_for(&key, 10);
    let short = seal_chunk(&key, 0, true, b"123456789").expect("sealed");
    assert!(matches!(
        open_file_chunk(&info, 0, &short),
        Err(FileError::BadLayout { index: 0 })
    ));
}

#[test]
fn file_messages_are_checked() {
    let key = FileKey::random().expect("key");
    let info = info_for(&key, 100_000);
    let good = info.to_proto();
    assert_eq!(FileInfo::from_proto(good.clone()).expect("good"), info);
    let mut bad = good.clone();
    bad.mailbox_id = vec![0; 32].into();
    assert!(matches!(
        FileInfo::from_proto(bad),
        Err(FileError::BadMessage(_))
    ));
    let mut bad = good.clone();
    bad.chunks += 1;
    assert!(matches!(
        FileInfo::from_proto(bad),
        Err(FileError::CountMismatch { .. })
    ));
    let mut bad = good.clone();
    bad.key = vec![1; 31].into();
    assert!(FileInfo::from_proto(bad).is_err());
    let mut bad = good.clone();
    bad.sha256 = vec![1; 33].into();
    assert!(FileInfo::from_proto(bad).is_err());
    let mut bad = good;
    bad.thumbnail = vec![0; MAX_THUMBNAIL + 1].into();
    assert!(FileInfo::from_proto(bad).is_err());
    // The key never shows in Debug.
    assert!(!format!("{info:?}").contains(&format!("{:?}", key.as_bytes())));
    assert_eq!(format!("{key:?}"), "FileKey(..)");
}

#[test]
fn names_are_sanitized() {
    assert_eq!(sanitize_name("report.pdf"), "report.pdf");
    assert_eq!(sanitize_name("../../etc/passwd"), "_.._etc_passwd");
    assert_eq!(sanitize_name(".."), "file");
    assert_eq!(sanitize_name("."), "file");
    assert_eq!(sanitize_name(""), "file");
    assert_eq!(sanitize_name("/"), "file");
    assert_eq!(sanitize_name(".bashrc"), "bashrc");
    assert_eq!(sanitize_name("a\nb\x1b[31m.txt"), "a_b_[31m.txt");
    assert_eq!(sanitize_name("C:\\Windows\\x.exe"), "C__Windows_x.exe");
    let long = format!("{}.tar.gz", "é".repeat(300));
    let cut = sanitize_name(&long);
    assert!(cut.len() <= MAX_NAME && cut.ends_with(".gz"), "{cut}");
    for name in ["a/b", "../x", "x/..", "\0", "..\\..\\x"] {
        let clean = sanitize_name(name);
        assert!(!clean.contains('/') && !clean.contains('\\') && clean != ".." && clean != ".");
        assert_eq!(
            std::path::Path::new(&clean).components().count(),
            1,
            "{name}"
        );
    }
}

#[test]
fn the_relay_limit_bounds_the_padded_count() {
    let limits = |blobs, bytes| sotto_proto::wire::Limits {
        mailbox_max_blobs: blobs,
        mailbox_max_bytes: bytes,
        ..Default::default()
    };
    assert_eq!(transfer::max_file_size(&limits(0, 0)), None);
    let max = transfer::max_file_size(&limits(20_000, 512 << 20)).expect("advertised");
    // 512 MiB / 64 KiB = 8192 blobs is the tighter bound.
    assert!(padded_chunks(max) <= 8192);
    assert!(padded_chunks(max + CHUNK_DATA as u64) > 8192);
    let small = transfer::max_file_size(&limits(10, 0)).expect("advertised");
    assert!(padded_chunks(small) <= 10 && padded_chunks(small + 1) > 10);
}

#[test]
fn an_upload_record_round_trips_and_a_damaged_one_is_refused() {
    let key = FileKey::random().expect("key");
    let mut info = info_for(&key, 5 * CHUNK_DATA as u64);
    info.caption = "notes".into();
    info.thumbnail = vec![0xff, 0xd8, 1, 2];
    for target in [
        UploadTarget::Member("bob".into()),
        UploadTarget::Group("ops".into()),
    ] {
        let record = PendingUpload {
            id: [7; 16],
            target,
            path: std::path::PathBuf::from("/tmp/some file.bin"),
            modified_ns: 1_700_000_000_123_456_789,
            info: info.clone(),
            stored: Resume { chunks: 3, seq: 99 },
            sent_at: 42,
        };
        let bytes = record.encode();
        assert_eq!(PendingUpload::decode(&bytes).expect("decodes"), record);
        // The key never shows in Debug.
        assert!(!format!("{record:?}").contains("notes"));
        // Cut anywhere, or with a byte more: refused, never a panic.
        for cut in 0..bytes.len() {
            assert!(PendingUpload::decode(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(PendingUpload::decode(&longer).is_err());
        let mut other = bytes.to_vec();
        other[0] = 9;
        assert!(PendingUpload::decode(&other).is_err());
    }
}
