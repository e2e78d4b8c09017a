//! What the command line's end-to-end tests share: a real `sotto-relay`
//! process in a temp dir, the real `sotto` binary in temp homes, and a team
//! of two. Each test binary uses part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The relay binary, built beside `sotto` by `cargo test --workspace`.
pub(crate) fn relay_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_sotto")).with_file_name("sotto-relay");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or build sotto-relay first)",
        path.display()
    );
    path
}

/// A running relay process; killed on drop.
pub(crate) struct Relay {
    child: Child,
    pub(crate) addr: String,
    pub(crate) fingerprint: String,
    /// The bootstrap code (empty after a restart: it was used).
    pub(crate) bootstrap: String,
    data: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relay on a free loopback port with a fresh data directory.
pub(crate) fn start_relay() -> Relay {
    start_relay_at(tempfile::tempdir().unwrap(), "127.0.0.1:0")
}

impl Relay {
    /// Stops the relay gracefully (SIGTERM) and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
    }

    /// Starts a stopped relay again on the same address and data directory.
    pub(crate) fn start_again(mut self) -> Relay {
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        let addr = self.addr.clone();
        drop(self);
        start_relay_at(data, &addr)
    }

    /// [`Relay::stop`], then [`Relay::start_again`].
    pub(crate) fn restart(mut self) -> Relay {
        self.stop();
        self.start_again()
    }
}

/// A relay on `listen` with `data` as its data directory.
pub(crate) fn start_relay_at(data: tempfile::TempDir, listen: &str) -> Relay {
    let mut child = Command::new(relay_bin())
        .args(["--listen", listen, "--data"])
        .arg(data.path())
        .env("SOTTO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut fingerprint, mut bootstrap, mut done) = (None, None, None, false);
    // A restarted relay prints no bootstrap code (it was used); "data:" is
    // printed every time, after the address and fingerprint.
    let first_start = !data.path().join("relay-cert.der").exists();
    while !done || (first_start && bootstrap.is_none()) {
        let line = lines
            .next()
            .expect("the relay prints its identity")
            .unwrap();
        if let Some(v) = line.strip_prefix("listen: ") {
            addr = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("fingerprint: ") {
            fingerprint = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("bootstrap code: ") {
            bootstrap = Some(v.to_owned());
        } else if line.starts_with("data: ") {
            done = true;
        }
    }
    Relay {
        child,
        addr: addr.unwrap(),
        fingerprint: fingerprint.unwrap(),
        bootstrap: bootstrap.unwrap_or_default(),
        data,
    }
}

/// `sotto --home HOME ARGS`, not yet run.
pub(crate) fn command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sotto"));
    command
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SOTTO_PASSPHRASE")
        .env("SOTTO_LOG", "error");
    command
}

/// Runs `sotto --home HOME ARGS` (no stdin) and collects its output.
pub(crate) fn sotto(home: &Path, args: &[&str]) -> Output {
    command(home, args).output().unwrap()
}

/// `sotto ARGS` with `input` on its stdin.
pub(crate) fn sotto_stdin(home: &Path, args: &[&str], input: &str) -> Output {
    let mut child = command(home, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Asserts success; returns stdout.
pub(crate) fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Asserts a failure with `code` whose stderr mentions `needle`.
pub(crate) fn fails(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Error: "),
        "{stderr}"
    );
}

/// The admin `alice` creates team "acme" on `relay` in `admin`.
pub(crate) fn create_team(relay: &Relay, admin: &Path) {
    ok(&sotto(
        admin,
        &[
            "team",
            "create",
            &relay.bootstrap,
            "--handle",
            "alice",
            "--name",
            "acme",
            "--relay",
            &relay.addr,
            "--fingerprint",
            &relay.fingerprint,
        ],
    ));
}

/// An invite code for `handle`; checks the QR code on stderr.
pub(crate) fn invite(admin: &Path, handle: &str, expires: &str) -> String {
    let output = sotto(admin, &["invite", handle, "--expires", expires]);
    let code = ok(&output).trim().to_owned();
    // The code on stdout, a scannable QR code of it on stderr.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains('█') || stderr.contains('▀'),
        "no QR code: {stderr}"
    );
    code
}

/// A relay, alice (admin) and bob (joined), in temp homes.
pub(crate) fn team_of_two() -> (Relay, tempfile::TempDir, PathBuf, PathBuf) {
    let relay = start_relay();
    let homes = tempfile::tempdir().unwrap();
    let (alice, bob) = (homes.path().join("alice"), homes.path().join("bob"));
    create_team(&relay, &alice);
    let code = invite(&alice, "bob", "7d");
    ok(&sotto(&bob, &["join", &code]));
    (relay, homes, alice, bob)
}

/// Polls `check` until it holds, for at most 30 s.
pub(crate) fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// alice (in `alice`) and bob (in `bob`) verify each other by SAS at the
/// same time (`verify --sas --json`), both answering "y": each side's
/// `--json` lines, after checking that both showed the same code and both
/// ended verified.
pub(crate) fn verify_both_by_sas(alice: &Path, bob: &Path) {
    let start = |home: &Path, peer: &str| {
        let mut child = command(
            home,
            &["verify", peer, "--sas", "--json", "--timeout", "60"],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        // Both people see matching emoji and say so.
        child.stdin.take().unwrap().write_all(b"y\n").unwrap();
        child
    };
    let (a, b) = (start(alice, "bob"), start(bob, "alice"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let lines = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (a, b) = (lines(&ok(&a)), lines(&ok(&b)));
    assert_eq!(
        a[0]["sas_decimals"], b[0]["sas_decimals"],
        "both devices show the same code"
    );
    assert_eq!(a[0]["sas_emoji"], b[0]["sas_emoji"]);
    assert_eq!(a[0]["sas_emoji"].as_array().unwrap().len(), 7);
    assert_eq!(a.last().unwrap()["verified"], true);
    assert_eq!(b.last().unwrap()["verified"], true);
}
