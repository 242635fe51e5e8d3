//! The data directory on the command line: `crosscam user …` needs only the data directory (a
//! site config whose camera credentials are not set still works), and every command that takes
//! one spells it `--data-dir` (the old `--data` of `timeline` still works).

use std::path::Path;
use std::process::{Command, Output};

fn crosscam(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(args)
        .current_dir(dir)
        .env("CROSSCAM_PASSWORD", "first-admin-password")
        .env_remove("CROSSCAM_CONFIG")
        .env_remove("CROSSCAM_TEST_UNSET_PASSWORD")
        .output()
        .expect("run crosscam")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "crosscam failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn user_add_reads_only_the_data_dir_of_a_site_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    let config = dir.path().join("etc/site.toml");
    // a camera whose password variable is unset: `serve` would refuse this file
    std::fs::write(
        &config,
        "[server]\ndata_dir = \"../site-data\"\n\n[[cameras]]\nid = \"door\"\n\
         url = \"rtsp://192.0.2.1/stream\"\nusername = \"viewer\"\n\
         password_env = \"CROSSCAM_TEST_UNSET_PASSWORD\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = ok(&crosscam(
        &["user", "add", "--config", cfg, "alice", "--role", "admin"],
        dir.path(),
    ));
    assert!(out.contains("user alice added"), "{out}");
    assert!(
        dir.path().join("site-data/auth.db").is_file(),
        "data_dir is relative to the config file's directory"
    );
    let listed = ok(&crosscam(&["user", "list", "--config", cfg], dir.path()));
    assert!(
        listed.contains("alice") && listed.contains("admin"),
        "{listed}"
    );
    // the same directory given directly, under both spellings
    for flag in ["--data-dir", "--data"] {
        let listed = ok(&crosscam(&["user", "list", flag, "site-data"], dir.path()));
        assert!(listed.contains("alice"), "{flag}: {listed}");
    }
    let out = ok(&crosscam(
        &["user", "remove", "--config", cfg, "alice"],
        dir.path(),
    ));
    assert!(out.contains("user alice removed"), "{out}");
    let listed = ok(&crosscam(
        &["user", "list", "--data-dir", "site-data"],
        dir.path(),
    ));
    assert!(!listed.contains("alice"), "{listed}");
}

#[test]
fn timeline_takes_data_dir_and_still_accepts_data() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--data-dir", "--data"] {
        let out = crosscam(&["timeline", flag, "empty", "--out", "t.svg"], dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        // the flag was understood: the complaint is about the folder, not the argument
        assert!(err.contains("holds no crosscam.db"), "{flag}: {err}");
    }
    let help = ok(&crosscam(&["timeline", "--help"], dir.path()));
    assert!(help.contains("--data-dir"), "{help}");
    assert!(
        !help.contains("--data "),
        "--data is a hidden alias: {help}"
    );
}
