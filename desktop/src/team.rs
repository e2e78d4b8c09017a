//! The team window: members and their verification (safety number, emoji
//! comparison), this member's devices (add with a link code and its QR
//! code, approve with the confirmation code, remove), and for admins
//! invites (code and QR code), revocation and groups.
//!
//! Everything goes through the profile's owner, as the `sotto` commands
//! do: structured calls where the control protocol has them (`members`,
//! `whoami`, `verify.sas.*`), else the command itself through `cli.run`
//! with `--json`. Each call is a [`Ticket`] whose answer a later frame
//! takes; nothing here blocks a frame.

use eframe::egui;
use serde_json::{Value, json};
use sotto_cli::{CliOutput, Session, Ticket};

/// How often a running emoji comparison asks the owner again.
const SAS_POLL_SECS: f64 = 0.5;
/// How long an emoji comparison waits for the other side, as
/// `sotto verify --sas` does by default.
const SAS_TIMEOUT_SECS: f64 = 120.0;

/// The label of the team window's button in the header.
pub const TEAM_BUTTON: &str = "Team";

/// A member as the members list shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    handle: String,
    me: bool,
    verified: bool,
}

/// One of my devices, or a new one waiting for approval.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Device {
    id: String,
    name: String,
    this: bool,
    waiting: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Tab {
    #[default]
    Members,
    Devices,
    Admin,
}

/// What an answer is for.
enum Pending {
    Members,
    Whoami,
    Devices,
    /// A command whose output is shown; `code_field` names the JSON field
    /// holding a code to show as a QR code too.
    Command {
        what: String,
        code_field: Option<&'static str>,
        /// Reload the members (and devices) afterwards.
        reload: bool,
    },
    SafetyNumber(String),
    SasStart(String),
    SasCode(String),
    SasConfirm(String, bool),
    SasResult(String),
}

/// The emoji comparison with one member, as far as it got.
enum SasStage {
    /// Started; waiting for the other side's key.
    Waiting,
    /// The code to compare.
    Code(String),
    /// This side said it matches; waiting for the other side's
    /// confirmation.
    Confirmed,
    /// Over: what the user reads.
    Done(String),
}

struct Sas {
    handle: String,
    stage: SasStage,
    /// When it started (egui time, seconds), for the timeout.
    started: f64,
    /// When the owner is asked next.
    next_poll: f64,
    /// Whether a poll is running.
    polling: bool,
}

/// A command's result, with a code to show as text and QR code.
struct Shown {
    title: String,
    text: String,
    ok: bool,
    code: Option<String>,
    qr: Option<egui::TextureHandle>,
}

/// The team window's state.
#[derive(Default)]
pub struct TeamWindow {
    /// Whether the window is open.
    pub open: bool,
    tab: Tab,
    members: Option<Vec<Member>>,
    devices: Option<Vec<Device>>,
    admin: Option<bool>,
    pending: Vec<(Ticket, Pending)>,
    shown: Option<Shown>,
    safety: Option<(String, String)>,
    sas: Option<Sas>,
    /// A revocation waiting for "yes".
    confirm_revoke: Option<String>,
    invite_handle: String,
    revoke_handle: String,
    group_name: String,
    group_members: String,
    approve_code: String,
}

impl TeamWindow {
    /// Opens the window and loads what it shows.
    pub fn show(&mut self, session: &mut Session) {
        self.open = true;
        self.reload(session);
        if self.admin.is_none() {
            let ticket = session.call("whoami", json!({}));
            self.pending.push((ticket, Pending::Whoami));
        }
    }

    /// Whether an answer is still awaited (the window keeps polling).
    #[must_use]
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
            || self
                .sas
                .as_ref()
                .is_some_and(|s| !matches!(s.stage, SasStage::Done(_)))
    }

    fn reload(&mut self, session: &mut Session) {
        let ticket = session.call("members", json!({}));
        self.pending.push((ticket, Pending::Members));
        let ticket = session.run_cli(&["--json", "devices", "--pending"]);
        self.pending.push((ticket, Pending::Devices));
    }

    fn command(
        &mut self,
        session: &mut Session,
        what: impl Into<String>,
        args: &[&str],
        code_field: Option<&'static str>,
        reload: bool,
    ) {
        let ticket = session.run_cli(args);
        self.pending.push((
            ticket,
            Pending::Command {
                what: what.into(),
                code_field,
                reload,
            },
        ));
    }

    /// Takes the answers that came in.
    fn collect(&mut self, ctx: &egui::Context, session: &mut Session) {
        let mut waiting = Vec::new();
        let mut reload = false;
        for (ticket, pending) in std::mem::take(&mut self.pending) {
            let done = match &pending {
                Pending::Command { .. } | Pending::Devices | Pending::SafetyNumber(_) => {
                    session.cli_reply(ticket).map(Answer::Cli)
                }
                _ => session.reply(ticket).map(Answer::Call),
            };
            let Some(answer) = done else {
                waiting.push((ticket, pending));
                continue;
            };
            reload |= self.answered(ctx, pending, answer);
        }
        self.pending.extend(waiting);
        if reload {
            self.reload(session);
        }
    }

    /// Applies one answer; true when the lists should be read again.
    fn answered(&mut self, ctx: &egui::Context, pending: Pending, answer: Answer) -> bool {
        match (pending, answer) {
            (Pending::Members, Answer::Call(Ok(result))) => {
                self.members = Some(parse_members(&result));
            }
            (Pending::Members, Answer::Call(Err(error))) => {
                self.say(
                    "Members",
                    format!("could not list the members: {error}"),
                    false,
                );
            }
            (Pending::Whoami, Answer::Call(result)) => {
                self.admin = Some(
                    result
                        .ok()
                        .and_then(|r| r.get("admin").and_then(Value::as_bool))
                        .unwrap_or(false),
                );
            }
            (Pending::Devices, Answer::Cli(output)) => {
                if output.ok {
                    self.devices = Some(parse_devices(&output.stdout));
                } else {
                    self.say("Devices", output.text, false);
                }
            }
            (
                Pending::Command {
                    what,
                    code_field,
                    reload,
                },
                Answer::Cli(output),
            ) => {
                let code = code_field.and_then(|field| json_field(&output.stdout, field));
                let qr = code.as_deref().and_then(|code| qr_texture(ctx, code));
                // The code is shown on its own: the JSON lines it came in
                // are for programs.
                let text = output
                    .text
                    .lines()
                    .filter(|line| serde_json::from_str::<Value>(line).is_err())
                    .collect::<Vec<_>>()
                    .join("\n");
                self.shown = Some(Shown {
                    title: what,
                    text,
                    ok: output.ok,
                    code,
                    qr,
                });
                return reload && output.ok;
            }
            (Pending::SafetyNumber(handle), Answer::Cli(output)) => {
                let text = if output.ok {
                    json_field(&output.stdout, "safety_number").map_or(output.text, |number| {
                        format!(
                            "{number}\n\nCompare it with {handle} in person or on a call; it is the same on both sides unless someone is in the middle."
                        )
                    })
                } else {
                    output.text
                };
                self.safety = Some((handle, text));
            }
            (Pending::SasStart(handle), Answer::Call(result)) => {
                if let Some(sas) = self.sas.as_mut().filter(|s| s.handle == handle) {
                    sas.polling = false;
                    if let Err(error) = result {
                        sas.stage =
                            SasStage::Done(format!("The comparison could not start: {error}"));
                    }
                }
            }
            (Pending::SasCode(handle), Answer::Call(result)) => {
                if let Some(sas) = self.sas.as_mut().filter(|s| s.handle == handle) {
                    sas.polling = false;
                    match result {
                        Ok(result) => {
                            if let Some(text) = result
                                .get("code")
                                .and_then(|c| c.get("text"))
                                .and_then(Value::as_str)
                            {
                                sas.stage = SasStage::Code(text.to_owned());
                            }
                        }
                        Err(error) => {
                            sas.stage = SasStage::Done(format!("The comparison stopped: {error}"));
                        }
                    }
                }
            }
            (Pending::SasConfirm(handle, matches), Answer::Call(result)) => {
                if let Some(sas) = self.sas.as_mut().filter(|s| s.handle == handle) {
                    sas.polling = false;
                    sas.stage = match (result, matches) {
                        (Err(error), _) => {
                            SasStage::Done(format!("The comparison stopped: {error}"))
                        }
                        (Ok(_), false) => SasStage::Done(format!(
                            "Nothing was trusted. If the emoji differ, someone may be in the middle: talk to {handle} another way."
                        )),
                        (Ok(_), true) => SasStage::Confirmed,
                    };
                }
            }
            (Pending::SasResult(handle), Answer::Call(result)) => {
                if let Some(sas) = self.sas.as_mut().filter(|s| s.handle == handle) {
                    sas.polling = false;
                    match result {
                        Ok(r) if r.get("verified").and_then(Value::as_bool) == Some(true) => {
                            sas.stage = SasStage::Done(format!("{handle} is verified."));
                            return true;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            sas.stage = SasStage::Done(format!("The comparison stopped: {error}"));
                        }
                    }
                }
            }
            (_, _) => {}
        }
        false
    }

    fn say(&mut self, title: &str, text: String, ok: bool) {
        self.shown = Some(Shown {
            title: title.to_owned(),
            text,
            ok,
            code: None,
            qr: None,
        });
    }

    /// Asks the owner for the next step of a running emoji comparison.
    fn poll_sas(&mut self, now: f64, session: &mut Session) {
        let Some(sas) = self.sas.as_mut() else {
            return;
        };
        if sas.polling || now < sas.next_poll {
            return;
        }
        let handle = sas.handle.clone();
        let pending = match sas.stage {
            SasStage::Waiting => Pending::SasCode(handle.clone()),
            SasStage::Confirmed => Pending::SasResult(handle.clone()),
            SasStage::Code(_) | SasStage::Done(_) => return,
        };
        if now - sas.started > SAS_TIMEOUT_SECS {
            sas.stage = SasStage::Done(format!(
                "{handle} did not answer in time; nothing was trusted. Start again together."
            ));
            return;
        }
        let method = match pending {
            Pending::SasCode(_) => "verify.sas.code",
            _ => "verify.sas.result",
        };
        sas.polling = true;
        sas.next_poll = now + SAS_POLL_SECS;
        let ticket = session.call(method, json!({ "with": handle }));
        self.pending.push((ticket, pending));
    }

    /// Draws the window (when open) and handles its input.
    pub fn ui(&mut self, ctx: &egui::Context, session: &mut Session) {
        self.collect(ctx, session);
        let now = ctx.input(|i| i.time);
        self.poll_sas(now, session);
        if !self.open {
            return;
        }
        let mut open = true;
        egui::Window::new("Team")
            .open(&mut open)
            .default_width(460.0)
            .default_height(560.0)
            .default_pos(ctx.content_rect().right_top() + egui::vec2(-480.0, 40.0))
            .show(ctx, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    let mut tab = self.tab;
                    ui.horizontal(|ui| {
                        ui.selectable_value(&mut tab, Tab::Members, "Members");
                        ui.selectable_value(&mut tab, Tab::Devices, "My devices");
                        if self.admin == Some(true) {
                            ui.selectable_value(&mut tab, Tab::Admin, "Admin");
                        }
                    });
                    self.tab = tab;
                    ui.separator();
                    match tab {
                        Tab::Members => self.members_tab(ui, session, now),
                        Tab::Devices => self.devices_tab(ui, session),
                        Tab::Admin => self.admin_tab(ui, session),
                    }
                    self.shown_result(ui);
                });
            });
        self.open = open;
        self.safety_dialog(ctx);
        self.sas_dialog(ctx, session);
        self.revoke_dialog(ctx, session);
    }

    fn members_tab(&mut self, ui: &mut egui::Ui, session: &mut Session, now: f64) {
        let Some(members) = self.members.clone() else {
            ui.label("Loading the members…");
            return;
        };
        egui::Grid::new("members").striped(true).show(ui, |ui| {
            for member in &members {
                if member.me {
                    ui.label(format!("{} (you)", member.handle));
                    ui.label("");
                    ui.end_row();
                    continue;
                }
                ui.label(&member.handle);
                if member.verified {
                    ui.label("verified ✔");
                } else {
                    ui.weak("not verified");
                }
                if ui
                    .button(format!("Safety number of {}", member.handle))
                    .clicked()
                {
                    let ticket = session.run_cli(&["--json", "verify", &member.handle]);
                    self.pending
                        .push((ticket, Pending::SafetyNumber(member.handle.clone())));
                }
                if ui
                    .button(format!("Compare emoji with {}", member.handle))
                    .clicked()
                {
                    let ticket = session.call("verify.sas.start", json!({ "with": member.handle }));
                    self.pending
                        .push((ticket, Pending::SasStart(member.handle.clone())));
                    self.sas = Some(Sas {
                        handle: member.handle.clone(),
                        stage: SasStage::Waiting,
                        started: now,
                        next_poll: now + SAS_POLL_SECS,
                        polling: true,
                    });
                }
                ui.end_row();
            }
        });
        if ui.button("Refresh").clicked() {
            self.reload(session);
        }
    }

    fn devices_tab(&mut self, ui: &mut egui::Ui, session: &mut Session) {
        match self.devices.clone() {
            None => {
                ui.label("Loading your devices…");
            }
            Some(devices) => {
                egui::Grid::new("devices").striped(true).show(ui, |ui| {
                    for device in &devices {
                        let short = device.id.get(..8).unwrap_or(&device.id);
                        let name = if device.name.is_empty() {
                            "(unnamed)"
                        } else {
                            &device.name
                        };
                        ui.monospace(short);
                        ui.label(name);
                        if device.this {
                            ui.weak("this device");
                        } else if device.waiting {
                            ui.weak("waiting for approval");
                        } else if ui.button(format!("Remove {name}")).clicked() {
                            self.command(
                                session,
                                format!("Device {short} removed"),
                                &["device", "remove", &device.id],
                                None,
                                true,
                            );
                        }
                        ui.end_row();
                    }
                });
            }
        }
        ui.separator();
        if ui.button("Add a device").clicked() {
            self.command(
                session,
                "Link code for a new device",
                &["--json", "device", "add"],
                Some("code"),
                false,
            );
        }
        ui.horizontal(|ui| {
            let label = ui.label("Confirmation code shown on the new device");
            ui.add(egui::TextEdit::singleline(&mut self.approve_code).desired_width(120.0))
                .labelled_by(label.id);
            let code = self.approve_code.trim().to_owned();
            if ui
                .add_enabled(!code.is_empty(), egui::Button::new("Approve"))
                .clicked()
            {
                self.command(
                    session,
                    "Device approved",
                    &["device", "approve", &code],
                    None,
                    true,
                );
                self.approve_code.clear();
            }
        });
    }

    fn admin_tab(&mut self, ui: &mut egui::Ui, session: &mut Session) {
        ui.strong("Invite a member");
        ui.horizontal(|ui| {
            let label = ui.label("Handle to invite");
            ui.add(egui::TextEdit::singleline(&mut self.invite_handle).desired_width(140.0))
                .labelled_by(label.id);
            let handle = self.invite_handle.trim().to_owned();
            if ui
                .add_enabled(!handle.is_empty(), egui::Button::new("Invite"))
                .clicked()
            {
                self.command(
                    session,
                    format!("Invite code for {handle}"),
                    &["--json", "invite", &handle],
                    Some("code"),
                    false,
                );
                self.invite_handle.clear();
            }
        });
        ui.separator();
        ui.strong("Remove a member from the team");
        ui.horizontal(|ui| {
            let label = ui.label("Handle to remove");
            ui.add(egui::TextEdit::singleline(&mut self.revoke_handle).desired_width(140.0))
                .labelled_by(label.id);
            let handle = self.revoke_handle.trim().to_owned();
            if ui
                .add_enabled(!handle.is_empty(), egui::Button::new("Remove…"))
                .clicked()
            {
                self.confirm_revoke = Some(handle);
            }
        });
        ui.separator();
        ui.strong("Groups");
        ui.horizontal(|ui| {
            let label = ui.label("Group name");
            ui.add(egui::TextEdit::singleline(&mut self.group_name).desired_width(120.0))
                .labelled_by(label.id);
        });
        ui.horizontal(|ui| {
            let label = ui.label("Members (handles, space-separated)");
            ui.add(egui::TextEdit::singleline(&mut self.group_members).desired_width(200.0))
                .labelled_by(label.id);
        });
        let name = self.group_name.trim().to_owned();
        let members: Vec<String> = self
            .group_members
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let ready = !name.is_empty() && !members.is_empty();
        ui.horizontal(|ui| {
            for (button, verb) in [
                ("Create group", "create"),
                ("Add to group", "add"),
                ("Remove from group", "remove"),
            ] {
                if ui.add_enabled(ready, egui::Button::new(button)).clicked() {
                    let mut args = vec!["group", verb, name.as_str()];
                    args.extend(members.iter().map(String::as_str));
                    self.command(session, format!("Group {name}: {verb}"), &args, None, true);
                }
            }
        });
    }

    fn shown_result(&self, ui: &mut egui::Ui) {
        let Some(shown) = &self.shown else {
            return;
        };
        ui.separator();
        ui.strong(&shown.title);
        if !shown.ok {
            ui.colored_label(ui.visuals().warn_fg_color, "failed");
        }
        if let Some(code) = &shown.code {
            // A long code breaks anywhere, not at its first hyphen.
            let mut job = egui::text::LayoutJob::single_section(
                code.clone(),
                egui::TextFormat::simple(
                    egui::TextStyle::Monospace.resolve(ui.style()),
                    ui.visuals().text_color(),
                ),
            );
            job.wrap.break_anywhere = true;
            job.wrap.max_width = ui.available_width();
            ui.label(job);
            if ui.button("Copy").clicked() {
                ui.ctx().copy_text(code.clone());
            }
            if let Some(qr) = &shown.qr {
                ui.add(egui::Image::new((qr.id(), egui::vec2(180.0, 180.0))).alt_text("QR code"));
            }
        }
        ui.label(&shown.text);
    }

    fn safety_dialog(&mut self, ctx: &egui::Context) {
        let Some((handle, text)) = &self.safety else {
            return;
        };
        let mut open = true;
        egui::Window::new(format!("Safety number with {handle}"))
            .open(&mut open)
            .collapsible(false)
            .show(ctx, |ui| {
                ui.monospace(text);
            });
        if !open {
            self.safety = None;
        }
    }

    fn sas_dialog(&mut self, ctx: &egui::Context, session: &mut Session) {
        let Some(sas) = &self.sas else {
            return;
        };
        let handle = sas.handle.clone();
        let mut open = true;
        let mut answer = None;
        egui::Window::new(format!("Compare emoji with {handle}"))
            .open(&mut open)
            .collapsible(false)
            .show(ctx, |ui| match &sas.stage {
                SasStage::Waiting => {
                    ui.label(format!(
                        "Waiting for {handle}: they choose \"Compare emoji\" with you (or run sotto verify {} --sas) now.",
                        session.me()
                    ));
                }
                SasStage::Code(code) => {
                    ui.label(format!("Does {handle} see the same?"));
                    ui.heading(code);
                    ui.horizontal(|ui| {
                        if ui.button("They match").clicked() {
                            answer = Some(true);
                        }
                        if ui.button("They differ").clicked() {
                            answer = Some(false);
                        }
                    });
                }
                SasStage::Confirmed => {
                    ui.label(format!("Waiting for {handle} to confirm too…"));
                }
                SasStage::Done(text) => {
                    ui.label(text);
                }
            });
        if let Some(matches) = answer {
            let ticket = session.call(
                "verify.sas.confirm",
                json!({ "with": handle, "matches": matches }),
            );
            self.pending
                .push((ticket, Pending::SasConfirm(handle.clone(), matches)));
            if let Some(sas) = self.sas.as_mut() {
                sas.polling = true;
                sas.next_poll = ctx.input(|i| i.time) + SAS_POLL_SECS;
            }
        }
        if !open {
            self.sas = None;
        }
    }

    fn revoke_dialog(&mut self, ctx: &egui::Context, session: &mut Session) {
        let Some(handle) = self.confirm_revoke.clone() else {
            return;
        };
        let mut decided = None;
        egui::Window::new("Remove a member")
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                ui.label(format!(
                    "Remove {handle} from the team? Their devices lose relay access, and every group they are in moves to new keys."
                ));
                ui.horizontal(|ui| {
                    if ui.button(format!("Remove {handle}")).clicked() {
                        decided = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        decided = Some(false);
                    }
                });
            });
        match decided {
            Some(true) => {
                self.command(
                    session,
                    format!("{handle} removed"),
                    &["revoke", &handle],
                    None,
                    true,
                );
                self.revoke_handle.clear();
                self.confirm_revoke = None;
            }
            Some(false) => self.confirm_revoke = None,
            None => {}
        }
    }
}

/// An answer: a structured call's, or a command's output.
enum Answer {
    Call(Result<Value, String>),
    Cli(CliOutput),
}

/// `members` → who, and whether verified.
fn parse_members(result: &Value) -> Vec<Member> {
    result
        .get("members")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    Some(Member {
                        handle: m.get("handle")?.as_str()?.to_owned(),
                        me: m.get("me").and_then(Value::as_bool).unwrap_or(false),
                        verified: m.get("verified").and_then(Value::as_bool).unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `sotto --json devices --pending` → one device per line.
fn parse_devices(stdout: &str) -> Vec<Device> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|d| {
            Some(Device {
                id: d.get("id")?.as_str()?.to_owned(),
                name: d
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                this: d.get("this").and_then(Value::as_bool).unwrap_or(false),
                waiting: d.get("confirm").is_some_and(|c| !c.is_null()),
            })
        })
        .collect()
}

/// The string `field` of the first JSON line of `stdout` that has it.
fn json_field(stdout: &str, field: &str) -> Option<String> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|v| v.get(field)?.as_str().map(str::to_owned))
}

/// A QR code of `text` as a texture (black on white, a quiet zone of
/// four modules), or None if the text does not fit a QR code.
fn qr_texture(ctx: &egui::Context, text: &str) -> Option<egui::TextureHandle> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let quiet = 4;
    let side = width + 2 * quiet;
    let colors = code.to_colors();
    let mut pixels = vec![egui::Color32::WHITE; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (index % width + quiet, index / width + quiet);
            pixels[y * side + x] = egui::Color32::BLACK;
        }
    }
    let image = egui::ColorImage::new([side, side], pixels);
    Some(ctx.load_texture("qr code", image, egui::TextureOptions::NEAREST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_devices_parse_and_odd_entries_are_skipped() {
        let members = parse_members(&json!({"members": [
            {"handle": "alice", "me": true, "verified": false},
            {"handle": "bob", "verified": true},
            {"nohandle": 1},
        ]}));
        assert_eq!(
            members,
            vec![
                Member {
                    handle: "alice".into(),
                    me: true,
                    verified: false
                },
                Member {
                    handle: "bob".into(),
                    me: false,
                    verified: true
                },
            ]
        );
        let devices = parse_devices(
            "{\"id\":\"abcd\",\"name\":\"laptop\",\"this\":true,\"confirm\":null}\nnot json\n{\"id\":\"ef01\",\"name\":\"\",\"confirm\":\"1234-5678\"}\n",
        );
        assert_eq!(devices.len(), 2);
        assert!(devices[0].this && !devices[0].waiting);
        assert!(devices[1].waiting && !devices[1].this);
    }

    #[test]
    fn a_qr_code_is_square_with_a_white_border_and_dark_modules() {
        let ctx = egui::Context::default();
        let texture = qr_texture(&ctx, "sotto-invite:abc").unwrap();
        let [w, h] = texture.size();
        assert_eq!(w, h);
        assert!(w > 21 + 8 - 1);
        assert_eq!(
            json_field("x\n{\"code\":\"c1\"}\n", "code").as_deref(),
            Some("c1")
        );
        assert_eq!(json_field("{}", "code"), None);
    }
}
