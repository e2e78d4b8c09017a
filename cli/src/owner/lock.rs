//! Who owns a profile: an flock'ed `<home>/owner.lock` is the truth (the
//! kernel drops the lock when its process dies, even by `kill -9`), the
//! control socket only the channel to it.
//!
//! Every process that opens the store holds this lock while it has it
//! open: a long-running owner (`sotto daemon`, `listen`, `chat`) for its
//! lifetime, a one-shot command for its run. A command that finds the lock
//! held asks the owner's socket; if nothing answers there, a one-shot
//! command is running, and it waits for it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::remote::{self, Remote};
use crate::errors::OwnedError;

/// The lock file's name in the home directory.
pub(crate) const LOCK_FILE: &str = "owner.lock";

/// How long a command waits for another one-shot command on the same
/// profile to finish.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// How often it looks again meanwhile.
const POLL: Duration = Duration::from_millis(25);

/// The held lock on a profile; released on drop.
pub(crate) struct ProfileLock {
    file: File,
    path: PathBuf,
}

impl ProfileLock {
    /// Takes the lock if nobody holds it. The file is checked to still be
    /// the one at `path` after locking: an owner that stopped removes it,
    /// and a lock on a removed file would lock nothing.
    fn try_acquire(home: &Path) -> std::io::Result<Option<Self>> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = home.join(LOCK_FILE);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(error)) => return Err(error),
            }
            let held = file.metadata()?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(Self { file, path }));
                }
                // Removed or replaced between open and lock: try again.
                _ => continue,
            }
        }
    }

    /// Records who holds it, for the messages of those who wait.
    fn describe_holder(&mut self, what: &str) {
        let _ = self.file.set_len(0);
        let _ = writeln!(self.file, "sotto {what} (pid {})", std::process::id());
        let _ = self.file.flush();
    }

    /// Removes the lock file, then releases the lock (an owner stopping
    /// cleanly leaves nothing behind).
    pub(crate) fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self);
    }
}

/// Who holds the lock, as its holder wrote it.
pub(crate) fn holder(home: &Path) -> String {
    std::fs::read_to_string(home.join(LOCK_FILE))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "another sotto process".to_owned())
}

/// How a command gets at the profile.
pub(crate) enum Claim {
    /// Nobody else has it: this process opens it, under the lock.
    Mine(ProfileLock),
    /// An owner serves it: the command runs through it.
    Owner(Remote),
}

/// What the claiming process is (recorded in the lock file).
fn what() -> String {
    std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "command".to_owned())
}

/// For a one-shot command: the lock, or the owner's socket; waits for
/// another one-shot command to finish.
pub(crate) async fn claim(home: &Path) -> anyhow::Result<Claim> {
    crate::commands::create_home(home)?;
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        if let Some(mut lock) = ProfileLock::try_acquire(home)? {
            lock.describe_holder(&what());
            return Ok(Claim::Mine(lock));
        }
        if let Ok(remote) = remote::connect(home).await {
            return Ok(Claim::Owner(remote));
        }
        if Instant::now() >= deadline {
            return Err(busy(home).into());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn busy(home: &Path) -> OwnedError {
    OwnedError::Busy {
        home: home.display().to_string(),
        holder: holder(home),
    }
}

/// For a process that will own the profile: the lock, after checking
/// that the home is private. Waits for a one-shot command to finish;
/// refuses if an owner already serves the profile.
pub(crate) async fn acquire_for_owner(home: &Path, what: &str) -> anyhow::Result<ProfileLock> {
    crate::commands::create_home(home)?;
    check_private(home)?;
    let deadline = Instant::now() + BUSY_WAIT;
    loop {
        if let Some(mut lock) = ProfileLock::try_acquire(home)? {
            lock.describe_holder(what);
            return Ok(lock);
        }
        if remote::connect(home).await.is_ok() {
            return Err(OwnedError::AlreadyOwned {
                home: home.display().to_string(),
                holder: holder(home),
            }
            .into());
        }
        if Instant::now() >= deadline {
            return Err(busy(home).into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// For `team create` and `join`, which make a new profile: the lock; a
/// profile with an owner already has an identity.
pub(crate) async fn lock_for_setup(home: &Path) -> anyhow::Result<ProfileLock> {
    match claim(home).await? {
        Claim::Mine(lock) => Ok(lock),
        Claim::Owner(_) => Err(sotto_core::AppError::AlreadyJoined(home.to_owned()).into()),
    }
}

/// Refuses a home that others may enter: whoever reaches the control
/// socket acts as this member.
pub(crate) fn check_private(home: &Path) -> Result<(), OwnedError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|e| OwnedError::Socket {
            holder: "this process".into(),
            reason: format!("cannot read {}: {e}", home.display()),
        })?;
    if mode & 0o077 != 0 {
        return Err(OwnedError::Permissions {
            path: home.display().to_string(),
            mode,
            want: 0o700,
        });
    }
    Ok(())
}
