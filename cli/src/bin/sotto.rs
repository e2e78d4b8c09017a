//! The `sotto` binary: everything is in the library (`sotto_cli`), which
//! the desktop client shares.

fn main() -> std::process::ExitCode {
    sotto_cli::run()
}
