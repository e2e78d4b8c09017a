//! `sotto demo`: a whole team on an embedded relay in a temp dir. It shows
//! the conversation next to what the relay stored: blob sizes and mailbox
//! ID prefixes, nothing else, because that is all it has.

use serde_json::json;
use sotto_core::{App, KeySource, RelayTarget, system_clock};

use crate::output::Output;

/// The demo's narration is its result, so it goes to stdout (in human
/// mode; `--json` prints only JSON objects).
fn say(out: &Output, text: &str) {
    if !out.json {
        out.line(text);
    }
}

/// Runs the demo and cleans up.
pub(crate) async fn run(out: &Output) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = sotto_relay::Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().join("relay"),
        ..sotto_relay::Config::default()
    };
    let server = sotto_relay::Server::start(config).await?;
    let relay = RelayTarget {
        addr: server.local_addr().to_string(),
        fingerprint: server.fingerprint(),
    };
    let bootstrap = server.new_bootstrap_code().unwrap_or_default().to_owned();
    say(
        out,
        &format!("▶ relay on {} (data in a temp dir)", relay.addr),
    );

    let home = |name: &str| dir.path().join(name);
    let mut alice = App::create_team(
        &home("alice"),
        KeySource::key_file_in(&home("alice")),
        relay,
        &bootstrap,
        "demo",
        "alice",
        system_clock(),
    )
    .await?;
    say(
        out,
        "▶ alice created team \"demo\" and invites bob and carol",
    );
    let mut members = Vec::new();
    for handle in ["bob", "carol"] {
        let code = alice.invite(handle, 3600).await?;
        let app = App::join(
            &home(handle),
            KeySource::key_file_in(&home(handle)),
            &code,
            system_clock(),
        )
        .await?;
        say(
            out,
            &format!(
                "  {handle} joined with a {}-character invite code",
                code.len()
            ),
        );
        members.push(app);
    }
    let (bob, carol) = match members.as_mut_slice() {
        [bob, carol] => (bob, carol),
        _ => anyhow::bail!("the demo team has two members"),
    };

    let script = [
        ("alice", "bob", "Hi Bob! Welcome to the team."),
        (
            "alice",
            "carol",
            "Carol, the release notes are in the usual place.",
        ),
        (
            "bob",
            "alice",
            "Thanks Alice. Nobody but you can read this, not even the relay.",
        ),
        (
            "carol",
            "alice",
            "Got it. And the relay can't even tell we talked.",
        ),
    ];
    for (from, to, text) in script {
        let app = match from {
            "alice" => &mut alice,
            "bob" => &mut *bob,
            _ => &mut *carol,
        };
        app.send(to, text).await?;
    }
    let everyone = ["bob".to_owned(), "carol".to_owned()];
    alice
        .group_create("launch", &everyone, sotto_core::Rotation::default())
        .await?;
    alice
        .group_send(
            "launch",
            "Launch is at 10:00. One upload reached both of you.",
        )
        .await?;
    say(
        out,
        "▶ alice made the group \"launch\" with bob and carol and wrote to it once",
    );

    say(out, "\n▶ what the relay stores right now (all of it):");
    let counts = server.relay().storage().audit_scan()?;
    for mailbox in &counts.mailboxes {
        if out.json {
            out.line(
                json!({"relay_mailbox": hex::encode(mailbox.prefix), "blobs": mailbox.blobs, "bytes": mailbox.bytes}),
            );
        } else {
            out.line(format_args!(
                "  mailbox {}…  {} blob(s), {} bytes",
                hex::encode(mailbox.prefix),
                mailbox.blobs,
                mailbox.bytes
            ));
        }
    }
    say(
        out,
        "  (every blob is exactly 1, 4, 16 or 64 KiB; mailbox IDs change every hour; no names, no keys)",
    );

    say(
        out,
        "\n▶ the conversation, as each member's device shows it:",
    );
    for (name, app) in [("alice", &mut alice), ("bob", bob), ("carol", carol)] {
        let report = app.sync().await?;
        for message in &report.messages {
            if out.json {
                out.message(message);
            } else {
                let group = message
                    .group
                    .as_ref()
                    .map(|g| format!(" in #{g}"))
                    .unwrap_or_default();
                out.line(format_args!(
                    "  {name:>5} got from {:<5}{group}  \"{}\"",
                    message.from, message.text
                ));
            }
        }
    }
    // Delivered receipts travel back too.
    alice.sync().await?;

    // A second device: linked with a code from one alice already has, and
    // approved there with the code the new one shows.
    let link = alice.device_add().await?;
    let (mut laptop, confirm) = App::join_link(
        &home("alice-laptop"),
        KeySource::key_file_in(&home("alice-laptop")),
        &link.code,
        None,
        Some("laptop"),
        system_clock(),
    )
    .await?;
    alice.device_approve(&confirm, Some(0)).await?;
    let history = laptop.sync().await?;
    say(
        out,
        &format!(
            "\n▶ alice linked a laptop (confirmation code {confirm}, typed into her first device); \
             it received her keys, the group and {} messages of history",
            history.history_messages
        ),
    );
    bob.send("alice", "Both of your devices get this, once each.")
        .await?;
    for (name, app) in [("phone", &mut alice), ("laptop", &mut laptop)] {
        for message in &app.sync().await?.messages {
            if out.json {
                out.message(message);
            } else {
                out.line(format_args!(
                    "  alice's {name:<6} got from {:<5}  \"{}\"",
                    message.from, message.text
                ));
            }
        }
    }

    // The receipts those devices sent back.
    bob.sync().await?;

    let after = server.relay().storage().audit_scan()?;
    let left: u64 = after.mailboxes.iter().map(|m| m.blobs).sum();
    say(
        out,
        &format!(
            "\n▶ after everyone synced, the relay holds {left} blob(s): delivered 1:1 blobs are deleted; \
             the group's blob stays until its TTL (every member reads it with a cursor of their own)."
        ),
    );
    server.shutdown().await;
    say(out, "▶ demo finished; the temp dir is removed.");
    Ok(())
}
