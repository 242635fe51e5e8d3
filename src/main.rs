use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = crosscam::cli::Cli::parse();
    crosscam::cli::init_logging("info");
    match crosscam::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
