//! The whole window: joining a team when the profile has no identity yet,
//! a clear message when the profile cannot be opened, and the
//! conversations ([`Desktop`]) once it is open.

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;
use sotto_cli::{Joined, NewTeam, Session};
use tokio::sync::oneshot;
use zeroize::{Zeroize, Zeroizing};

use crate::Desktop;

/// Called from another thread when the window should repaint.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What the window shows.
enum Screen {
    /// The profile has no identity: paste a code to join.
    Join(Box<Join>),
    /// The profile could not be opened: why, and a button to try again.
    Failed(String),
    /// The store is locked by a passphrase: ask for it.
    Unlock(Unlock),
    /// A joined device of a member waits for approval on another device.
    Linking { handle: String, confirm: String },
    /// Conversations.
    Open(Box<Desktop>),
}

/// The join form (or, for an admin, the form that creates a team).
#[derive(Default)]
struct Join {
    code: String,
    /// Create a team instead of joining one.
    create: bool,
    team: NewTeam,
    /// An optional passphrase for the new profile's store, typed twice.
    passphrase: String,
    again: String,
    /// A join in flight: its outcome arrives here.
    pending: Option<oneshot::Receiver<Result<Joined, String>>>,
    /// Why the last attempt failed.
    error: Option<String>,
    /// The path of a picture of the code's QR code.
    qr_path: String,
    /// What reading that picture said (a code was found, or why not).
    qr_note: Option<Result<String, String>>,
}

impl Join {
    /// Reads the code from a picture of its QR code into the form.
    fn read_qr(&mut self, read: Result<String, crate::qr::QrError>) {
        self.qr_note = Some(match read {
            Ok(code) => {
                self.code = code;
                Ok("Code read from the picture.".into())
            }
            Err(error) => Err(format!("{error}.")),
        });
    }
}

impl Drop for Join {
    fn drop(&mut self) {
        self.passphrase.zeroize();
        self.again.zeroize();
    }
}

/// The passphrase prompt.
#[derive(Default)]
struct Unlock {
    text: String,
    error: Option<String>,
}

impl Drop for Unlock {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

/// The window on a profile.
pub struct Shell {
    home: PathBuf,
    runtime: Arc<tokio::runtime::Runtime>,
    wake: Wake,
    screen: Screen,
    /// The passphrase a linking device was created with, until it opens.
    passphrase: Option<Zeroizing<String>>,
}

/// The label of the join form's code field (tests find it by this).
pub const CODE_LABEL: &str = "Invite code or device-link code";
/// The label of the passphrase prompt's field.
pub const PASSPHRASE_LABEL: &str = "Passphrase";
/// The labels of the optional passphrase fields of a new profile.
pub const NEW_PASSPHRASE_LABEL: &str = "Passphrase for this profile (optional)";
/// The second of them.
pub const AGAIN_LABEL: &str = "The passphrase again";
/// The join form's field for a picture of the code's QR code.
pub const QR_PATH_LABEL: &str = "Or a picture of its QR code (PNG or JPEG file)";
/// The button that reads it.
pub const QR_BUTTON: &str = "Read the QR code";

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
            passphrase: None,
        };
        shell.open();
        shell
    }

    fn open(&mut self) {
        self.open_with(None);
    }

    /// Opens the profile, with the store's passphrase if the user gave
    /// one (else the CLI's rules: `SOTTO_PASSPHRASE`, or the key file).
    fn open_with(&mut self, passphrase: Option<&str>) {
        let wake = self.wake.clone();
        let opened = self
            .runtime
            .block_on(Session::open_with(&self.home, passphrase, move || wake()));
        self.screen = match opened {
            Ok(session) => Screen::Open(Box::new(Desktop::new(session, self.runtime.clone()))),
            Err(error) if sotto_cli::is_not_joined(&error) => Screen::Join(Box::default()),
            Err(error)
                if sotto_cli::needs_passphrase(&error) && !sotto_cli::passphrase_from_env() =>
            {
                Screen::Unlock(Unlock {
                    text: String::new(),
                    error: passphrase.map(|_| "That passphrase does not open this profile.".into()),
                })
            }
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
        let mut unlock = None;
        match &mut self.screen {
            Screen::Open(desktop) => desktop.ui(ui),
            Screen::Join(join) => {
                if let Some(joined) = join_form(ui, join, &self.home, &self.runtime, &self.wake) {
                    next = Some((joined, Zeroizing::new(join.passphrase.clone())));
                }
            }
            Screen::Unlock(form) => {
                centered(ui, |ui| {
                    ui.heading("This profile is locked");
                    ui.label("Type the passphrase its store was created with.");
                    let label = ui.label(PASSPHRASE_LABEL);
                    let field = ui
                        .add(egui::TextEdit::singleline(&mut form.text).password(true))
                        .labelled_by(label.id);
                    field.request_focus();
                    let enter = ui.input(|i| i.key_pressed(egui::Key::Enter));
                    if (ui.button("Unlock").clicked() || enter) && !form.text.is_empty() {
                        unlock = Some(Zeroizing::new(std::mem::take(&mut form.text)));
                    }
                    if let Some(error) = &form.error {
                        ui.colored_label(ui.visuals().error_fg_color, error.as_str());
                    }
                    ui.label(format!("Profile: {}", self.home.display()));
                });
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
                    let passphrase = self.passphrase.take();
                    self.open_with(passphrase.as_deref().map(String::as_str));
                }
            }
        }
        if let Some(passphrase) = unlock {
            self.open_with(Some(&passphrase));
        }
        match next {
            Some((Joined::Member { .. }, passphrase)) => {
                self.open_with(
                    Some(&passphrase)
                        .filter(|p| !p.is_empty())
                        .map(|p| p.as_str()),
                );
            }
            Some((
                Joined::Linking {
                    handle, confirm, ..
                },
                passphrase,
            )) => {
                self.passphrase = (!passphrase.is_empty()).then_some(passphrase);
                self.screen = Screen::Linking { handle, confirm };
            }
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
        ui.horizontal(|ui| {
            ui.selectable_value(&mut join.create, false, "Join a team");
            ui.selectable_value(&mut join.create, true, "Create a team (admin)");
        });
        ui.separator();
        if join.create {
            ui.heading("Create your team");
            ui.label(
                "On its first start, sotto-relay printed a one-time bootstrap code, its address and its certificate fingerprint.",
            );
            let team = &mut join.team;
            for (label, value, hint) in [
                ("Bootstrap code", &mut team.bootstrap_code, ""),
                ("Relay address", &mut team.relay, "host:port"),
                ("Relay fingerprint", &mut team.fingerprint, "64 hex digits"),
                ("Your handle", &mut team.handle, "e.g. alice"),
                ("Team name", &mut team.name, "e.g. acme"),
            ] {
                let label = ui.label(label);
                ui.add(
                    egui::TextEdit::singleline(value)
                        .desired_width(f32::INFINITY)
                        .hint_text(hint),
                )
                .labelled_by(label.id);
            }
        } else {
            ui.heading("Join your team");
            ui.label(
                "Paste the invite code your admin gave you, or the link code another of your devices shows (`sotto device add`).",
            );
            let label = ui.label(CODE_LABEL);
            ui.add(
                egui::TextEdit::singleline(&mut join.code)
                    .desired_width(f32::INFINITY)
                    .hint_text("sotto-invite:… or sotto-link:…"),
            )
            .labelled_by(label.id);
            let label = ui.label(QR_PATH_LABEL);
            let mut read = false;
            ui.horizontal(|ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut join.qr_path)
                        .desired_width(360.0)
                        .hint_text("or drop the picture onto this window"),
                )
                .labelled_by(label.id);
                read = ui
                    .add_enabled(
                        !join.qr_path.trim().is_empty(),
                        egui::Button::new(QR_BUTTON),
                    )
                    .clicked();
            });
            if read {
                let path = std::path::PathBuf::from(join.qr_path.trim());
                join.read_qr(crate::qr::read_code_from_file(&path));
            }
            // A picture dropped onto the form.
            let dropped = ui.input(|i| i.raw.dropped_files.first().cloned());
            if let Some(file) = dropped {
                let read = file
                    .bytes()
                    .map_err(|reason| crate::qr::QrError::Read {
                        path: file.path().display().to_string(),
                        reason,
                    })
                    .and_then(|bytes| crate::qr::read_code(&bytes));
                join.read_qr(read);
            }
            match &join.qr_note {
                Some(Ok(note)) => {
                    ui.label(note.as_str());
                }
                Some(Err(error)) => {
                    ui.colored_label(ui.visuals().error_fg_color, error.as_str());
                }
                None => {}
            }
        }
        if !sotto_cli::passphrase_from_env() {
            ui.add_space(8.0);
            let label = ui.label(NEW_PASSPHRASE_LABEL);
            ui.add(egui::TextEdit::singleline(&mut join.passphrase).password(true))
                .labelled_by(label.id);
            if !join.passphrase.is_empty() {
                let label = ui.label(AGAIN_LABEL);
                ui.add(egui::TextEdit::singleline(&mut join.again).password(true))
                    .labelled_by(label.id);
            }
            ui.small(
                "Without one, the store's key is kept in a file only you can read in the profile. With one, you type it whenever sotto opens; it cannot be recovered.",
            );
        }
        let enter = ui.input(|i| i.key_pressed(egui::Key::Enter));
        let button = if join.create { "Create team" } else { "Join" };
        ui.add_enabled_ui(join.pending.is_none(), |ui| {
            start = ui.button(button).clicked() || enter;
        });
        if join.pending.is_some() {
            ui.label(if join.create {
                "Creating…"
            } else {
                "Joining…"
            });
        }
        if let Some(error) = &join.error {
            ui.colored_label(ui.visuals().error_fg_color, error.as_str());
        }
    });
    if join.passphrase.is_empty() {
        join.again.zeroize();
    }
    if start && join.pending.is_none() {
        let problem = if join.passphrase != join.again {
            Some("The two passphrases differ.")
        } else if join.create
            && [
                &join.team.bootstrap_code,
                &join.team.relay,
                &join.team.fingerprint,
                &join.team.handle,
            ]
            .iter()
            .any(|field| field.trim().is_empty())
        {
            Some(
                "Fill in the bootstrap code, the relay's address and fingerprint, and your handle.",
            )
        } else if !join.create && join.code.trim().is_empty() {
            Some("Paste a code first.")
        } else {
            None
        };
        if let Some(problem) = problem {
            join.error = Some(problem.into());
        } else {
            join.error = None;
            let (done, pending) = oneshot::channel();
            join.pending = Some(pending);
            let home = home.to_owned();
            let wake = wake.clone();
            let passphrase = Zeroizing::new(join.passphrase.clone());
            let code = join.code.trim().to_owned();
            let mut team = join.create.then(|| join.team.clone());
            if let Some(team) = &mut team
                && team.name.trim().is_empty()
            {
                team.name = "team".into();
            }
            runtime.spawn(async move {
                let passphrase = Some(passphrase.as_str()).filter(|p| !p.is_empty());
                let outcome = match team {
                    Some(team) => sotto_cli::create_team(&home, &team, passphrase)
                        .await
                        .map(|(team, handle)| Joined::Member { team, handle }),
                    None => sotto_cli::join_team(&home, &code, passphrase).await,
                }
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
