//! A real `crosscam serve` process with its HTTP API on a free loopback port, users for each
//! role (made with `crosscam user add`), and a small HTTP client (ureq) for tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PASSWORD: &str = "test-password-1";

pub struct Daemon {
    pub child: super::KillOnDrop,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub agent: ureq::Agent,
    /// Lines of the daemon's stderr, collected by a thread.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_crosscam")
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The config text for a daemon in `dir`: `cameras` is TOML for `[[cameras]]` tables, `api` extra
/// lines of `[api]`.
pub fn config_text(dir: &Path, cameras: &str, api: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        "[server]\ndata_dir = \"{}\"\nlog = \"info\"\n\n[models]\nmanifest = \"{root}/models/manifest.toml\"\ndetector = \"nanodet-416\"\nembedder = \"crosscam-resnet18-vtest\"\n\n[analysis]\nfps = 5\nwidth = 640\n\n[api]\nlisten = \"127.0.0.1:0\"\n{api}\n{cameras}",
        dir.join("data").display()
    )
}

/// A camera playing the bundled clip in real time, `start_s` seconds in, looping.
pub fn clip_camera(id: &str, start_s: f64) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nurl = \"file://{}\"\nrealtime = true\nloop_file = true\nstart_s = {start_s}\n\n",
        crosscam::paths::media("vtest-h264.mp4").display()
    )
}

/// Runs a browser script of tests/browser (`node <script> <base>`, real Chromium through
/// playwright-core) with `env`; with `SCREENSHOTS=<dir>` in the test's environment the script
/// writes its screenshots to that folder of the project.
pub fn browser(script: &str, base: &str, env: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = Command::new("node");
    cmd.current_dir(format!("{root}/tests/browser"))
        .arg(script)
        .arg(base)
        .envs(env.iter().copied());
    if let Ok(dir) = std::env::var("SCREENSHOTS") {
        let dir = Path::new(root).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        cmd.env("SCREENSHOTS", dir);
    }
    cmd.output()
        .expect("node (make setup installs Node.js, chromium and playwright-core)")
}

pub fn add_user(config: &Path, name: &str, role: &str) {
    let out = Command::new(bin())
        .args(["user", "add", "--config"])
        .arg(config)
        .args([name, "--role", role])
        .env("CROSSCAM_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Daemon {
    /// Writes the config, adds `admin`, `operator`, `integrator` users, starts `crosscam serve`
    /// and waits until the API answers.
    pub fn start(cameras: &str, api: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("site.toml");
        std::fs::write(&config, config_text(dir.path(), cameras, api)).unwrap();
        for (n, r) in [
            ("admin", "admin"),
            ("operator", "operator"),
            ("integrator", "integrator"),
        ] {
            add_user(&config, n, r);
        }
        Daemon::spawn(dir, config)
    }

    pub fn spawn(dir: tempfile::TempDir, config: PathBuf) -> Daemon {
        Daemon::spawn_with(dir, config, &[])
    }

    /// As [`Daemon::spawn`], with more arguments for `crosscam serve`.
    pub fn spawn_with(dir: tempfile::TempDir, config: PathBuf, args: &[&str]) -> Daemon {
        Daemon::spawn_env(dir, config, args, &[])
    }

    /// As [`Daemon::spawn_with`], with environment variables for the daemon.
    pub fn spawn_env(
        dir: tempfile::TempDir,
        config: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        Launched::start(dir, config, args, env).api(60)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Signs in; returns the session token.
    pub fn login(&self, user: &str) -> String {
        let (st, v) = self.post_json(
            "/api/v1/login",
            None,
            &serde_json::json!({"user": user, "password": PASSWORD}),
        );
        assert_eq!(st, 200, "login {user}: {v}");
        v["token"].as_str().unwrap().to_string()
    }

    fn auth(
        r: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        token: Option<&str>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        match token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// GET → (status, JSON body or Null).
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let r = Daemon::auth(self.agent.get(&self.url(path)), token)
            .call()
            .unwrap();
        json_of(r)
    }

    pub fn get_bytes(&self, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
        let r = Daemon::auth(self.agent.get(&self.url(path)), token)
            .call()
            .unwrap();
        let st = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            st,
            ct,
            r.into_body()
                .with_config()
                .limit(50 << 20)
                .read_to_vec()
                .unwrap(),
        )
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let r = Daemon::auth(self.agent.delete(&self.url(path)), token)
            .call()
            .unwrap();
        json_of(r)
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send(
            "POST",
            path,
            token,
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    pub fn put_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send(
            "PUT",
            path,
            token,
            "application/json",
            body.to_string().into_bytes(),
        )
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        ct: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let url = self.url(path);
        let r = match method {
            "POST" => self.agent.post(&url),
            "PUT" => self.agent.put(&url),
            "PATCH" => self.agent.patch(&url),
            m => panic!("method {m}"),
        };
        let r = match token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        };
        let r = if ct.is_empty() {
            r.send(&body[..])
        } else {
            r.content_type(ct).send(&body[..])
        };
        json_of(r.unwrap())
    }

    /// Polls `f` every 500 ms until it returns Some, or panics after `secs`.
    pub fn wait_for<T>(&self, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                panic!(
                    "timed out after {secs} s waiting for {what}\nlog tail:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn log_tail(&self, n: usize) -> String {
        let l = self.log.lock().unwrap();
        l[l.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM and wait (at most 60 s); returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        self.child.terminate(60).is_some_and(|s| s.success())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

pub fn json_of(r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let st = r.status().as_u16();
    let text = r.into_body().read_to_string().unwrap_or_default();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A `crosscam serve` process that may not serve its API yet (a standby core).
pub struct Launched {
    pub child: super::KillOnDrop,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    urls: std::sync::mpsc::Receiver<String>,
}

impl Launched {
    pub fn start(
        dir: tempfile::TempDir,
        config: PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Launched {
        let mut child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(&config)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, urls) = std::sync::mpsc::channel();
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("web UI and API: ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('/');
                    let _ = tx.send(url.to_string());
                }
                l2.lock().unwrap().push(line);
            }
        });
        Launched {
            child: super::KillOnDrop(child),
            dir,
            config,
            log,
            urls,
        }
    }

    /// Whether a log line contains `what`.
    pub fn logged(&self, what: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(what))
    }

    /// Waits (at most `secs`) until the API answers.
    pub fn api(mut self, secs: u64) -> Daemon {
        let base = match self.urls.recv_timeout(Duration::from_secs(secs)) {
            Ok(b) => b,
            Err(_) => {
                let _ = self.child.0.kill();
                panic!(
                    "the daemon did not start its API:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        };
        Daemon {
            child: self.child,
            base,
            dir: self.dir,
            config: self.config,
            agent: agent(),
            log: self.log,
        }
    }
}
