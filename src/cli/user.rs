//! `crosscam user …`: the users and API tokens of a data directory (the first admin is made
//! here; later ones can also be added through the API).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Deserialize;

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
    /// Config file (TOML): only its `[server] data_dir` is read, so cameras need not be
    /// reachable nor their credentials set. Default: the built-in `data` directory.
    #[arg(long, short = 'c', env = "CROSSCAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (default: the config's `server.data_dir`).
    #[arg(long, alias = "data")]
    pub data_dir: Option<PathBuf>,
}

impl UserDirArgs {
    /// The data directory: `--data-dir`, else the config's `[server] data_dir`, else the
    /// built-in default.
    fn dir(&self) -> Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        match &self.config {
            Some(path) => data_dir_of_config(path),
            None => Ok(crate::config::Config::defaults()?.server.data_dir),
        }
    }

    fn open(&self) -> Result<AuthDb> {
        Ok(AuthDb::open(&self.dir()?)?)
    }
}

/// Only the `[server] data_dir` of a config file; every other key is ignored.
#[derive(Deserialize, Default)]
struct DataDirOnly {
    #[serde(default)]
    server: ServerDataDir,
}

#[derive(Deserialize, Default)]
struct ServerDataDir {
    data_dir: Option<PathBuf>,
}

/// The data directory a config file names (`[server] data_dir`, default `data`), relative paths
/// against the file's directory as the server resolves them. Nothing else of the file is checked:
/// managing users needs no cameras, models or credentials.
pub fn data_dir_of_config(path: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    data_dir_of_toml(&text, path)
}

/// [`data_dir_of_config`] on the text of a file read from `path`.
fn data_dir_of_toml(text: &str, path: &Path) -> Result<PathBuf> {
    let only: DataDirOnly = crate::config::parse_toml(text, &path.display().to_string())?;
    let dir = only
        .server
        .data_dir
        .unwrap_or_else(|| crate::config::ServerSettings::default().data_dir);
    Ok(if dir.is_relative() {
        path.parent().unwrap_or(Path::new("")).join(dir)
    } else {
        dir
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_read_from_the_server_table_alone() {
        // cameras whose credentials are not set, and keys the reader does not know, are ignored
        let text = r#"
[server]
data_dir = "site-data"
log = "debug"

[[cameras]]
id = "door"
url = "rtsp://cam/stream"
password_env = "NOT_SET_ANYWHERE_1234"
"#;
        let cfg = Path::new("/etc/crosscam/site.toml");
        assert_eq!(
            data_dir_of_toml(text, cfg).unwrap(),
            PathBuf::from("/etc/crosscam/site-data"),
            "relative to the config's directory"
        );
        assert_eq!(
            data_dir_of_toml("[server]\ndata_dir = \"/var/lib/crosscam\"\n", cfg).unwrap(),
            PathBuf::from("/var/lib/crosscam")
        );
        assert_eq!(
            data_dir_of_toml("", cfg).unwrap(),
            PathBuf::from("/etc/crosscam/data"),
            "the server's default, `data`"
        );
    }

    #[test]
    fn a_malformed_data_dir_is_an_error() {
        let e = data_dir_of_toml("[server]\ndata_dir = 3\n", Path::new("site.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("site.toml"), "{e}");
    }

    #[test]
    fn the_flag_wins_over_the_config() {
        let a = UserDirArgs {
            config: Some(PathBuf::from("/nonexistent/site.toml")),
            data_dir: Some(PathBuf::from("/srv/data")),
        };
        assert_eq!(a.dir().unwrap(), PathBuf::from("/srv/data"));
    }
}
