//! The whole window: joining a team when the profile has no identity yet,
//! a clear message when the profile cannot be opened, and the
//! conversations ([`Desktop`]) once it is open.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;
use sotto_cli::{Joined, Session};
use tokio::sync::oneshot;

use crate::Desktop;

/// Called from another thread when the window should repaint.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What the window shows.
enum Screen {
    /// The profile has no identity: paste a code to join.
    Join(Join),
    /// The profile could not be opened: why, and a button to try again.
    Failed(String),
    /// A joined device of a member waits for approval on another device.
    Linking { handle: String, confirm: String },
    /// Conversations.
    Open(Box<Desktop>),
}

/// The join form.
#[derive(Default)]
struct Join {
    code: String,
    /// A join in flight: its outcome arrives here.
    pending: Option<oneshot::Receiver<Result<Joined, String>>>,
    /// Why the last attempt failed.
    error: Option<String>,
}

/// The window on a profile.
pub struct Shell {
    home: PathBuf,
    runtime: Arc<tokio::runtime::Runtime>,
    wake: Wake,
    screen: Screen,
}

/// The label of the join form's code field (tests find it by this).
pub const CODE_LABEL: &str = "Invite code or device-link code";

impl Shell {
    /// Opens the profile at `home`; a home without an identity shows the
    /// join form instead, a profile that cannot be opened says why.
    #[must_use]
    pub fn new(home: PathBuf, runtime: Arc<tokio::runtime::Runtime>, wake: Wake) -> Self {
        let mut shell = Self {
            home,
            runtime,
            wake,
            screen: Screen::Failed(String::new()),
        };
        shell.open();
        shell
    }

    fn open(&mut self) {
        let wake = self.wake.clone();
        let opened = self
            .runtime
            .block_on(Session::open(&self.home, move || wake()));
        self.screen = match opened {
            Ok(session) => Screen::Open(Box::new(Desktop::new(session, self.runtime.clone()))),
            Err(error) if sotto_cli::is_not_joined(&error) => Screen::Join(Join::default()),
            Err(error) => Screen::Failed(sotto_cli::describe(&error)),
        };
    }

    /// The conversations, once the profile is open.
    #[must_use]
    pub fn desktop(&self) -> Option<&Desktop> {
        match &self.screen {
            Screen::Open(desktop) => Some(desktop),
            _ => None,
        }
    }

    /// The conversations, once the profile is open.
    pub fn desktop_mut(&mut self) -> Option<&mut Desktop> {
        match &mut self.screen {
            Screen::Open(desktop) => Some(desktop),
            _ => None,
        }
    }

    /// Stops owning the profile, if it is open.
    ///
    /// # Errors
    /// The owner ended with an error.
    pub fn close_blocking(&mut self) -> anyhow::Result<()> {
        match &mut self.screen {
            Screen::Open(desktop) => desktop.close_blocking(),
            _ => Ok(()),
        }
    }

    /// Renders the window at `size` (points) with a software renderer,
    /// without a display.
    ///
    /// # Errors
    /// No renderer could be set up (no GPU and no software Vulkan or GL).
    pub fn render(&mut self, size: (f32, f32)) -> anyhow::Result<image::RgbaImage> {
        let mut harness = egui_kittest::Harness::builder()
            .with_size(egui::vec2(size.0, size.1))
            .wgpu()
            .build_ui(|ui| self.ui(ui));
        // Layout settles within a few frames (panel sizes, fonts).
        harness.run_steps(4);
        harness
            .render()
            .map_err(|e| anyhow::anyhow!("cannot render the window: {e}"))
    }

    /// Draws the window.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        crate::draw_any_text(ui.ctx());
        let mut next = None;
        match &mut self.screen {
            Screen::Open(desktop) => desktop.ui(ui),
            Screen::Join(join) => {
                if let Some(joined) = join_form(ui, join, &self.home, &self.runtime, &self.wake) {
                    next = Some(joined);
                }
            }
            Screen::Failed(reason) => {
                let mut retry = false;
                centered(ui, |ui| {
                    ui.heading("sotto cannot open this profile");
                    ui.label(reason.as_str());
                    ui.label(format!("Profile: {}", self.home.display()));
                    retry = ui.button("Try again").clicked();
                });
                if retry {
                    self.open();
                }
            }
            Screen::Linking { handle, confirm } => {
                let mut go = false;
                centered(ui, |ui| {
                    ui.heading(format!("This device asks to join {handle}'s devices"));
                    ui.label("On the device that showed you the link code, run:");
                    ui.monospace(format!("sotto device approve {confirm}"));
                    ui.label("Then continue here: this device gets its keys, groups and history.");
                    go = ui.button("Continue").clicked();
                });
                if go {
                    self.open();
                }
            }
        }
        match next {
            Some(Joined::Member { .. }) => self.open(),
            Some(Joined::Linking {
                handle, confirm, ..
            }) => self.screen = Screen::Linking { handle, confirm },
            None => {}
        }
    }
}

impl eframe::App for Shell {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        Shell::ui(self, ui);
    }
}

/// The join form; returns what a finished join did.
fn join_form(
    ui: &mut egui::Ui,
    join: &mut Join,
    home: &std::path::Path,
    runtime: &tokio::runtime::Runtime,
    wake: &Wake,
) -> Option<Joined> {
    if let Some(pending) = &mut join.pending {
        match pending.try_recv() {
            Ok(Ok(joined)) => {
                join.pending = None;
                return Some(joined);
            }
            Ok(Err(error)) => {
                join.pending = None;
                join.error = Some(error);
            }
            Err(oneshot::error::TryRecvError::Empty) => {
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(50));
            }
            Err(oneshot::error::TryRecvError::Closed) => {
                join.pending = None;
                join.error = Some("joining stopped unexpectedly; try again".into());
            }
        }
    }
    let mut start = false;
    centered(ui, |ui| {
        ui.heading("Join your team");
        ui.label(
            "Paste the invite code your admin gave you, or the link code another of your devices shows (`sotto device add`).",
        );
        let label = ui.label(CODE_LABEL);
        let field = ui
            .add(
                egui::TextEdit::singleline(&mut join.code)
                    .desired_width(f32::INFINITY)
                    .hint_text("sotto-invite:… or sotto-link:…"),
            )
            .labelled_by(label.id);
        let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        ui.add_enabled_ui(join.pending.is_none(), |ui| {
            start = ui.button("Join").clicked() || enter;
        });
        if join.pending.is_some() {
            ui.label("Joining…");
        }
        if let Some(error) = &join.error {
            ui.colored_label(ui.visuals().error_fg_color, error.as_str());
        }
    });
    if start && join.pending.is_none() {
        let code = join.code.trim().to_owned();
        if code.is_empty() {
            join.error = Some("Paste a code first.".into());
        } else {
            join.error = None;
            let (done, pending) = oneshot::channel();
            join.pending = Some(pending);
            let home = home.to_owned();
            let wake = wake.clone();
            runtime.spawn(async move {
                let outcome = sotto_cli::join_team(&home, &code)
                    .await
                    .map_err(|error| sotto_cli::describe(&error));
                let _ = done.send(outcome);
                wake();
            });
        }
    }
    None
}

/// A narrow column in the middle of the window.
fn centered(ui: &mut egui::Ui, add: impl FnOnce(&mut egui::Ui)) {
    egui::CentralPanel::default().show(ui, |ui| {
        ui.vertical_centered(|ui| {
            ui.set_max_width(520.0);
            ui.add_space(60.0);
            add(ui);
        });
    });
}
