//! Where the real binary looks for its data when `--data` is not given:
//! `SOTTO_RELAY_DATA`, else the platform's data directory (on Linux
//! `$XDG_DATA_HOME/sotto-relay` or `~/.local/share/sotto-relay`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `sotto-relay audit` (which never creates a database) with only `env`
/// set: its error names the data directory it used.
fn data_dir_used(env: &[(&str, &Path)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sotto-relay"))
        .arg("audit")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
        .env("SOTTO_LOG", "error")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .split(" holds no relay database")
        .next()
        .and_then(|before| before.rsplit(": ").next())
        .filter(|_| stderr.contains(" holds no relay database"))
        .unwrap_or_else(|| panic!("no data directory named in: {stderr}"))
        .to_owned()
}

#[test]
fn the_default_data_dir_is_sotto_relay_data_then_the_xdg_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (home, xdg, env): (PathBuf, PathBuf, PathBuf) = (
        dir.path().join("home"),
        dir.path().join("xdg"),
        dir.path().join("env"),
    );
    let shown = |path: &Path| path.display().to_string();
    assert_eq!(
        data_dir_used(&[("HOME", &home)]),
        shown(&home.join(".local/share/sotto-relay"))
    );
    assert_eq!(
        data_dir_used(&[("HOME", &home), ("XDG_DATA_HOME", &xdg)]),
        shown(&xdg.join("sotto-relay"))
    );
    assert_eq!(
        data_dir_used(&[
            ("HOME", &home),
            ("XDG_DATA_HOME", &xdg),
            ("SOTTO_RELAY_DATA", &env)
        ]),
        shown(&env)
    );
    // The audit created nothing anywhere.
    assert!(!home.exists() && !xdg.exists() && !env.exists());
}
