//! `sotto-desktop`: opens the desktop window on a profile, or with
//! `--screenshot FILE` renders the main window to a PNG and exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::Parser;
use eframe::egui;
use sotto_desktop::{Shell, Wake};

/// The sotto desktop client. While its window is open it owns the
/// profile: other `sotto` commands on the same home go through it.
#[derive(Parser, Debug)]
#[command(name = "sotto-desktop", version, about, long_about)]
struct Args {
    /// Directory holding this identity, as for `sotto --home`
    /// [default: $XDG_DATA_HOME/sotto].
    #[arg(long, env = "SOTTO_HOME")]
    home: Option<PathBuf>,
    /// Render the main window to this PNG file and exit (no display
    /// needed: a software renderer draws it).
    #[arg(long, value_name = "FILE")]
    screenshot: Option<PathBuf>,
    /// With --screenshot: open this conversation first (a member's handle
    /// or #group); what it shows is then marked read, as on screen.
    #[arg(long, value_name = "NAME", requires = "screenshot")]
    open: Option<String>,
    /// Show the first line of a message in desktop notifications (by
    /// default they say only who wrote: "alice: new message").
    #[arg(long)]
    notification_text: bool,
    /// No desktop notifications at all.
    #[arg(long, conflicts_with = "notification_text")]
    no_notifications: bool,
    /// The window's size for --screenshot, WIDTHxHEIGHT in points.
    #[arg(long, default_value = "1000x680", value_parser = parse_size)]
    size: (f32, f32),
}

fn parse_size(text: &str) -> Result<(f32, f32), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("\"{text}\" is not WIDTHxHEIGHT, e.g. 1000x680"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (200..=8000).contains(n))
            .map(f32::from)
            .ok_or_else(|| format!("\"{s}\" is not a size between 200 and 8000"))
    };
    Ok((number(w)?, number(h)?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sotto-desktop: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let home = args.home.clone().unwrap_or_else(sotto_cli::default_home);
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    );
    let window: Arc<OnceLock<egui::Context>> = Arc::new(OnceLock::new());
    let wake: Wake = {
        let window = window.clone();
        Arc::new(move || {
            if let Some(ctx) = window.get() {
                ctx.request_repaint();
            }
        })
    };
    let mut shell = Shell::new(home, runtime, wake);
    match &args.screenshot {
        Some(path) => screenshot(&mut shell, path, args.size, args.open.as_deref()),
        None => {
            let options = eframe::NativeOptions {
                viewport: egui::ViewportBuilder::default()
                    .with_title("sotto")
                    .with_inner_size([args.size.0, args.size.1]),
                ..Default::default()
            };
            let shared = Arc::new(std::sync::Mutex::new(None));
            let slot = shared.clone();
            let outcome = eframe::run_native(
                "sotto",
                options,
                Box::new(move |cc| {
                    let _ = window.set(cc.egui_ctx.clone());
                    Ok(Box::new(Window {
                        shell: Some(shell),
                        slot,
                        notification_text: args.notification_text,
                        notifications: !args.no_notifications,
                    }))
                }),
            );
            // The window closed: the profile's owner stops in order.
            if let Some(mut shell) = shared.lock().ok().and_then(|mut d| d.take()) {
                shell.close_blocking()?;
            }
            outcome.map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
        }
    }
}

/// The eframe app: the shell, handed back when the window closes.
struct Window {
    shell: Option<Shell>,
    slot: Arc<std::sync::Mutex<Option<Shell>>>,
    /// Notifications carry the first line of the message.
    notification_text: bool,
    /// Notifications are shown at all.
    notifications: bool,
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        if let Some(shell) = &mut self.shell {
            shell.ui(ui);
            if let Some(desktop) = shell.desktop_mut() {
                desktop.notify_text = self.notification_text;
                for body in desktop.notifications.drain(..) {
                    if self.notifications {
                        sotto_desktop::notify::show(body);
                    }
                }
            }
        }
    }

    fn on_exit(&mut self) {
        if let (Some(shell), Ok(mut slot)) = (self.shell.take(), self.slot.lock()) {
            *slot = Some(shell);
        }
    }
}

/// Renders the window once everything the profile holds is loaded,
/// writes it to `path`, and closes the profile.
fn screenshot(
    shell: &mut Shell,
    path: &std::path::Path,
    size: (f32, f32),
    open: Option<&str>,
) -> anyhow::Result<()> {
    let wait = std::time::Duration::from_secs(20);
    if let Some(desktop) = shell.desktop_mut() {
        desktop.settle(wait);
        if let Some(name) = open {
            if !desktop.open_named(name) {
                anyhow::bail!("\"{name}\" is not a member's handle or a #group");
            }
            desktop.settle(wait);
        }
    }
    let rendered = shell.render(size);
    let closed = shell.close_blocking();
    let image = rendered?;
    image
        .save(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    closed
}
