//! `crosscam user …`: the users and API tokens of a data directory (the first admin is made
//! here; later ones can also be added through the API).

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::api::auth::{AuthDb, Role};

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (the password is read from CROSSCAM_PASSWORD, or the first line of stdin).
    Add(UserAddArgs),
    /// Change a user's password (ends their sessions).
    Passwd(UserNameArgs),
    /// Remove a user, their sessions and their tokens.
    Remove(UserNameArgs),
    /// List users and roles.
    List(UserDirArgs),
    /// Issue an API token for a user (printed once; only its hash is stored).
    Token(UserTokenArgs),
}

#[derive(Args, Debug)]
pub struct UserDirArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Data directory (default: the config's `server.data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl UserDirArgs {
    fn open(&self) -> Result<AuthDb> {
        let dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => self.config.load()?.server.data_dir,
        };
        Ok(AuthDb::open(&dir)?)
    }
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    #[command(flatten)]
    pub dir: UserDirArgs,
    /// User name.
    pub name: String,
    #[arg(long, value_enum)]
    pub role: Role,
}

#[derive(Args, Debug)]
pub struct UserNameArgs {
    #[command(flatten)]
    pub dir: UserDirArgs,
    pub name: String,
}

#[derive(Args, Debug)]
pub struct UserTokenArgs {
    #[command(flatten)]
    pub dir: UserDirArgs,
    pub name: String,
    /// What the token is for (e.g. `prometheus`).
    #[arg(long)]
    pub label: String,
}

fn password() -> Result<String> {
    if let Ok(p) = std::env::var("CROSSCAM_PASSWORD") {
        return Ok(p);
    }
    eprintln!("password (one line on stdin):");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn run(cmd: UserCommand) -> Result<ExitCode> {
    match cmd {
        UserCommand::Add(a) => {
            let db = a.dir.open()?;
            db.add_user(&a.name, a.role, &password()?)?;
            println!("user {} added ({})", a.name, a.role);
        }
        UserCommand::Passwd(a) => {
            let db = a.dir.open()?;
            db.set_password(&a.name, &password()?)?;
            println!("password of {} changed; their sessions ended", a.name);
        }
        UserCommand::Remove(a) => {
            a.dir.open()?.remove_user(&a.name)?;
            println!("user {} removed", a.name);
        }
        UserCommand::List(a) => {
            for u in a.open()?.users()? {
                println!("{:<24} {}", u.name, u.role);
            }
        }
        UserCommand::Token(a) => {
            let db = a.dir.open()?;
            let (id, token, _) = db.issue(&a.name, "api", &a.label, None)?;
            eprintln!("token {id} for {} ({}); shown once:", a.name, a.label);
            println!("{token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
