//! `dom0ctl`: see `dom0ctl --help`.

use std::process::ExitCode;

use clap::Parser;
use dom0ctl::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dom0ctl::commands::run(cli) {
        Ok(()) => ExitCode::from(dom0ctl::exit::OK),
        Err(e) => {
            eprintln!("dom0ctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
