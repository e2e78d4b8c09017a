//! `sotto-load` with real access tokens against a separate `sotto-relay`
//! process that requires them (its default): the load generator bootstraps
//! the relay, obtains one token per connection, and every load connection
//! redeems one. Functional only: nothing here is timed.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::process::Command;

#[path = "relay_support/mod.rs"]
mod support;

/// Runs `sotto-load --json` against the relay and returns its report.
fn load(relay: &support::RelayProcess, extra: &[&str], scenario: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sotto-load"))
        .arg("--relay")
        .arg(relay.addr.addr.to_string())
        .arg("--fingerprint")
        .arg(hex::encode(relay.addr.fingerprint))
        .arg("--relay-pid")
        .arg(relay.child.id().to_string())
        .arg("--json")
        .args(extra)
        .args(scenario)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sotto-load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn load_connections_redeem_real_tokens_on_a_relay_that_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = support::spawn_relay(dir.path(), "");
    let code = sotto_relay::read_bootstrap_code(dir.path())
        .unwrap()
        .expect("a fresh relay has a bootstrap code");
    let connections = [
        "connections",
        "--count",
        "6",
        "--hold",
        "0",
        "--settle",
        "0",
    ];

    // Without tokens the relay refuses every subscription.
    let without = load(&relay, &[], &connections);
    assert_eq!(without["succeeded"], 0, "{without}");
    assert!(without["tokens"].is_null());

    // With them every connection is served, and the run says so.
    let with = load(&relay, &["--bootstrap-code", &code], &connections);
    assert_eq!(with["succeeded"], 6, "{with}");
    assert_eq!(with["alive_after_hold"], 6, "{with}");
    assert_eq!(with["tokens"]["tokens"], 6, "{with}");
    assert_eq!(with["tokens"]["accounts"], 1, "{with}");
    assert!(with["relay_cpu_ms_per_connection"].is_number(), "{with}");

    // The bootstrap code is spent: a second run cannot become admin.
    let out = Command::new(env!("CARGO_BIN_EXE_sotto-load"))
        .arg("--relay")
        .arg(relay.addr.addr.to_string())
        .arg("--fingerprint")
        .arg(hex::encode(relay.addr.fingerprint))
        .args(["--bootstrap-code", &code])
        .args(connections)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bootstrap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}

#[test]
fn load_throughput_with_real_tokens_delivers_every_put() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay = support::spawn_relay(dir.path(), "");
    let code = sotto_relay::read_bootstrap_code(dir.path())
        .unwrap()
        .unwrap();
    let report = load(
        &relay,
        &["--bootstrap-code", &code],
        &[
            "throughput",
            "--senders",
            "2",
            "--receivers",
            "2",
            "--rate",
            "200",
            "--duration",
            "0.3",
            "--warmup",
            "0",
        ],
    );
    let totals = &report["totals"];
    assert!(totals["acked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(totals["undelivered"], 0, "{report}");
    assert_eq!(totals["put_errors"], 0, "{report}");
    assert_eq!(report["tokens"]["tokens"], 4, "{report}");
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}
