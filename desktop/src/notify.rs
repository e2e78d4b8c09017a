//! Native desktop notifications (the freedesktop notification service on
//! Linux), for messages that arrive while the window is in the
//! background. A desktop without the service gets none, and one line on
//! stderr saying so; the window itself is unaffected.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a failure was already reported (once is enough).
static FAILED: AtomicBool = AtomicBool::new(false);

/// Shows `body` ("alice: new message") as a notification, on a thread of
/// its own: the notification service may be slow or absent, and a frame
/// never waits for it.
pub fn show(body: String) {
    let spawned = std::thread::Builder::new()
        .name("notify".into())
        .spawn(move || {
            let shown = notify_rust::Notification::new()
                .appname("sotto")
                .summary("sotto")
                .body(&body)
                .show();
            if let Err(error) = shown
                && !FAILED.swap(true, Ordering::Relaxed)
            {
                eprintln!("sotto-desktop: desktop notifications are not available: {error}");
            }
        });
    if spawned.is_err() && !FAILED.swap(true, Ordering::Relaxed) {
        eprintln!("sotto-desktop: desktop notifications are not available: no thread");
    }
}
