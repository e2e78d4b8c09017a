//! Files in the window (issue 21): the attach dialog (a typed path: no
//! native dialog library to build), files dropped onto the window, the
//! progress bars of this window's transfers, file messages drawn as cards
//! with Save / Save as…, and images shown inline as thumbnails.
//!
//! A thumbnail comes from the file message when the sender put one in;
//! else an image of at most [`PREVIEW_MAX`] bytes is fetched (hash-checked
//! by the owner like any save) into a private temporary directory, read,
//! deleted at once, and shrunk to [`crate::picture::THUMBNAIL_SIDE`]
//! pixels. Only the small texture is kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eframe::egui;
use sotto_cli::{FileCard, Session, Ticket};

/// The button that opens the attach dialog.
pub const ATTACH_BUTTON: &str = "Attach file…";
/// The attach dialog's path field.
pub const ATTACH_PATH_LABEL: &str = "Path of the file to send";
/// The attach dialog's caption field.
pub const CAPTION_LABEL: &str = "Caption (optional)";
/// The attach dialog's button.
pub const SEND_FILE_BUTTON: &str = "Send file";
/// A file card's button that saves into the download directory.
pub const SAVE_BUTTON: &str = "Save";
/// A file card's button that asks where to save.
pub const SAVE_AS_BUTTON: &str = "Save as…";
/// The save-as dialog's path field.
pub const SAVE_PATH_LABEL: &str = "Save to (a new file, or a folder)";
/// The save-as dialog's button.
pub const SAVE_HERE_BUTTON: &str = "Save here";

/// Images up to this size are fetched to show a thumbnail when their
/// message carries none.
pub const PREVIEW_MAX: u64 = 4 * 1024 * 1024;

/// The thumbnail of one file message.
enum Preview {
    /// Its bytes are being saved to this path.
    Fetching(Ticket, PathBuf),
    /// Drawn.
    Ready(egui::TextureHandle),
    /// None to show (too big, not a picture, the fetch failed).
    Nothing,
}

/// The attach dialog.
#[derive(Default)]
struct Attach {
    path: String,
    caption: String,
    error: Option<String>,
}

/// The save-as dialog for one file.
struct SaveAs {
    id: String,
    name: String,
    path: String,
}

/// What a file card asked for.
pub(crate) enum CardAction {
    Save,
    SaveAs,
}

/// The window's file state.
#[derive(Default)]
pub(crate) struct Files {
    attach: Option<Attach>,
    save_as: Option<SaveAs>,
    previews: HashMap<String, Preview>,
    /// Where images are fetched for their thumbnail (0700, removed with
    /// the window).
    preview_dir: Option<tempfile::TempDir>,
}

impl Files {
    /// The attach button, in the compose bar.
    pub(crate) fn attach_button(&mut self, ui: &mut egui::Ui) {
        if ui
            .button(ATTACH_BUTTON)
            .on_hover_text("Send a file to this conversation (or drop files onto the window)")
            .clicked()
        {
            self.attach = Some(Attach::default());
        }
    }

    /// Sends the files dropped onto the window to the open conversation.
    pub(crate) fn dropped(ctx: &egui::Context, session: &mut Session) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        for file in dropped {
            let path = file.path();
            if !path.as_os_str().is_empty() {
                session.send_file(path, "");
            }
        }
    }

    /// A hint while files are dragged over the window.
    pub(crate) fn hovering(ctx: &egui::Context) {
        if ctx.input(|i| i.raw.hovered_files.is_empty()) {
            return;
        }
        egui::Area::new(egui::Id::unique("drop hint"))
            .anchor(egui::Align2::CENTER_CENTER, [0.0, 0.0])
            .show(ctx, |ui| {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    ui.heading("Drop to send to this conversation");
                });
            });
    }

    /// Progress bars of this window's uploads and downloads.
    pub(crate) fn progress(ui: &mut egui::Ui, session: &Session) {
        for transfer in session.transfers() {
            #[allow(clippy::cast_precision_loss, reason = "a fraction for a bar")]
            let fraction = if transfer.total == 0 {
                0.0
            } else {
                transfer.done as f32 / transfer.total as f32
            };
            let what = if transfer.upload {
                "Uploading"
            } else {
                "Downloading"
            };
            ui.add(egui::ProgressBar::new(fraction).text(format!(
                "{what} {}: {} of {}",
                transfer.name,
                human_size(transfer.done),
                human_size(transfer.total)
            )));
        }
    }

    /// The attach and save-as dialogs, when open.
    pub(crate) fn dialogs(&mut self, ctx: &egui::Context, session: &mut Session) {
        if let Some(mut attach) = self.attach.take() {
            let mut keep = true;
            egui::Window::new("Attach a file")
                .collapsible(false)
                .resizable(false)
                .show(ctx, |ui| {
                    let label = ui.label(ATTACH_PATH_LABEL);
                    ui.add(
                        egui::TextEdit::singleline(&mut attach.path)
                            .desired_width(360.0)
                            .hint_text("/home/me/report.pdf"),
                    )
                    .labelled_by(label.id);
                    let label = ui.label(CAPTION_LABEL);
                    ui.add(egui::TextEdit::singleline(&mut attach.caption))
                        .labelled_by(label.id);
                    if let Some(error) = &attach.error {
                        ui.colored_label(ui.visuals().error_fg_color, error.as_str());
                    }
                    ui.horizontal(|ui| {
                        if ui.button(SEND_FILE_BUTTON).clicked() {
                            let path = expand_home(attach.path.trim());
                            if path.is_file() {
                                session.send_file(&path, attach.caption.trim());
                                keep = false;
                            } else {
                                attach.error =
                                    Some(format!("There is no file at {}.", path.display()));
                            }
                        }
                        if ui.button("Cancel").clicked() {
                            keep = false;
                        }
                    });
                });
            if keep {
                self.attach = Some(attach);
            }
        }
        if let Some(mut save_as) = self.save_as.take() {
            let mut keep = true;
            egui::Window::new(format!("Save {}", save_as.name))
                .collapsible(false)
                .resizable(false)
                .show(ctx, |ui| {
                    let label = ui.label(SAVE_PATH_LABEL);
                    ui.add(
                        egui::TextEdit::singleline(&mut save_as.path)
                            .desired_width(360.0)
                            .hint_text("~/Documents/"),
                    )
                    .labelled_by(label.id);
                    ui.horizontal(|ui| {
                        let path = save_as.path.trim();
                        if ui
                            .add_enabled(!path.is_empty(), egui::Button::new(SAVE_HERE_BUTTON))
                            .clicked()
                        {
                            session.save_file(&save_as.id, Some(&expand_home(path)));
                            keep = false;
                        }
                        if ui.button("Cancel").clicked() {
                            keep = false;
                        }
                    });
                });
            if keep {
                self.save_as = Some(save_as);
            }
        }
    }

    /// Opens the save-as dialog for file message `id`.
    pub(crate) fn ask_where(&mut self, id: &str, name: &str) {
        self.save_as = Some(SaveAs {
            id: id.to_owned(),
            name: name.to_owned(),
            path: String::new(),
        });
    }

    /// Brings the thumbnails of the images among `files` (message ID and
    /// card, the lines about to be drawn) along: asks, fetches, decodes.
    pub(crate) fn update_previews(
        &mut self,
        ctx: &egui::Context,
        session: &mut Session,
        files: &[(String, FileCard)],
    ) {
        for (id, card) in files {
            if !card.is_image() || id.is_empty() || id.starts_with("local:") {
                continue;
            }
            match self.previews.get(id) {
                Some(Preview::Ready(_) | Preview::Nothing) => {}
                Some(Preview::Fetching(ticket, path)) => {
                    let (ticket, path) = (*ticket, path.clone());
                    if let Some(reply) = session.reply(ticket) {
                        let preview = match reply {
                            Ok(_) => {
                                let bytes = std::fs::read(&path);
                                // The plaintext leaves the disk at once.
                                let _ = std::fs::remove_file(&path);
                                bytes
                                    .ok()
                                    .map_or(Preview::Nothing, |bytes| texture(ctx, id, &bytes))
                            }
                            Err(_) => Preview::Nothing,
                        };
                        self.previews.insert(id.clone(), preview);
                    }
                }
                None => {
                    let Some(details) = session.file_details(id) else {
                        continue;
                    };
                    let preview = if !details.thumbnail.is_empty() {
                        texture(ctx, id, &details.thumbnail)
                    } else if details.size <= PREVIEW_MAX {
                        match self.fetch(session, id) {
                            Some((ticket, path)) => Preview::Fetching(ticket, path),
                            None => Preview::Nothing,
                        }
                    } else {
                        Preview::Nothing
                    };
                    self.previews.insert(id.clone(), preview);
                }
            }
        }
    }

    /// Asks the owner to save file `id` into the preview directory.
    fn fetch(&mut self, session: &mut Session, id: &str) -> Option<(Ticket, PathBuf)> {
        if self.preview_dir.is_none() {
            self.preview_dir = tempfile::Builder::new()
                .prefix("sotto-preview-")
                .tempdir()
                .ok();
        }
        let dir = self.preview_dir.as_ref()?;
        // The ID is hex: a safe file name.
        let path = dir.path().join(
            id.chars()
                .filter(char::is_ascii_hexdigit)
                .collect::<String>(),
        );
        let ticket = session.call(
            "file.save",
            serde_json::json!({"id": id, "path": path.display().to_string()}),
        );
        Some((ticket, path))
    }

    /// Whether anything is on its way (the window keeps polling).
    pub(crate) fn busy(&self) -> bool {
        self.previews
            .values()
            .any(|p| matches!(p, Preview::Fetching(..)))
    }

    /// A file message as a card: name, size, thumbnail, caption, state,
    /// and its buttons.
    pub(crate) fn card(
        &self,
        ui: &mut egui::Ui,
        id: &str,
        card: &FileCard,
        details_downloaded: bool,
    ) -> Option<CardAction> {
        let mut chosen = None;
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong(card.name.as_str());
                if let Some(size) = card.size {
                    ui.weak(human_size(size));
                }
            });
            if let Some(Preview::Ready(texture)) = self.previews.get(id) {
                ui.add(
                    egui::Image::new(texture)
                        .alt_text(format!("Picture {}", card.name))
                        .max_size(egui::vec2(160.0, 160.0)),
                );
            }
            if !card.caption.is_empty() {
                ui.label(card.caption.as_str());
            }
            if let Some((done, total)) = card.progress {
                #[allow(clippy::cast_precision_loss, reason = "a fraction for a bar")]
                let fraction = if total == 0 {
                    0.0
                } else {
                    done as f32 / total as f32
                };
                ui.add(egui::ProgressBar::new(fraction).show_percentage());
            } else if let Some(path) = &card.saved {
                ui.weak(format!("Saved to {path}"));
            } else if details_downloaded {
                ui.weak("Downloaded");
            }
            if !id.is_empty() && !id.starts_with("local:") && card.progress.is_none() {
                ui.horizontal(|ui| {
                    if ui
                        .button(SAVE_BUTTON)
                        .on_hover_text("Save to your download folder")
                        .clicked()
                    {
                        chosen = Some(CardAction::Save);
                    }
                    if ui.button(SAVE_AS_BUTTON).clicked() {
                        chosen = Some(CardAction::SaveAs);
                    }
                });
            }
        });
        chosen
    }
}

/// The thumbnail texture of a picture, or nothing if it does not decode.
fn texture(ctx: &egui::Context, id: &str, bytes: &[u8]) -> Preview {
    match crate::picture::thumbnail(bytes) {
        Ok(image) => Preview::Ready(ctx.load_texture(
            format!("thumbnail {id}"),
            image,
            egui::TextureOptions::LINEAR,
        )),
        Err(_) => Preview::Nothing,
    }
}

/// `~/x` as the home directory's `x`.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Sizes as people read them.
pub use sotto_cli::human_size;
