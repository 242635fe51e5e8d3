//! The HTTP API (`/api/v1`), its WebSocket event stream, `/metrics` and the web UI, served by
//! the daemon itself (axum on a small tokio runtime of its own, beside the pipeline's threads).
//!
//! ```text
//! routes.rs   the route table: path, method, who may call it, handler; the router and the
//!             OpenAPI document are both built from it, so they cannot disagree
//! auth.rs     users, roles, sessions, API tokens (argon2, hashed tokens), login rate limits
//! limits.rs   per-user rate limits of the expensive endpoints (snapshots, search, exports)
//! credentials.rs  named camera credentials (admin only; names listed, values never returned)
//! cameras.rs  camera list, health, live snapshots, run-time add / change / remove
//! people.rs   identities, crops, timelines, search by image, merge / split, audit
//! admin.rs    models, jobs (prune / re-tune as child processes), users, tokens
//! events.rs   WebSocket event stream
//! metrics.rs  Prometheus text format
//! ui.rs       the web UI's files (ui/ in the repository, compiled in)
//! tls.rs      optional HTTPS (rustls)
//! ```

pub mod admin;
pub mod auth;
pub mod cameras;
pub mod credentials;
pub mod error;
pub mod events;
pub mod jobs;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod people;
pub mod routes;
pub mod schedule;
pub mod tls;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::Config;
use crate::server::Server;
use crate::store::Store;
pub use auth::{AuthDb, Caller, Need, Role};
pub use error::{ApiError, ApiResult};

/// Name of the session cookie the web UI signs in with.
pub const SESSION_COOKIE: &str = "crosscam_session";

pub struct Inner {
    pub server: Arc<Server>,
    pub cfg: Config,
    pub auth: AuthDb,
    pub limiter: auth::LoginLimiter,
    /// Per-user buckets of the expensive endpoints.
    pub rates: limits::RateLimiter,
    /// Named camera credentials (`DATA/credentials.db`).
    pub credentials: crate::store::credentials::CredentialStore,
    /// The API's own read connection to the store.
    pub store: Mutex<Store>,
    pub jobs: jobs::JobManager,
    /// `[retune] schedule`'s state (`/api/v1/status`).
    pub scheduler: schedule::Scheduler,
    pub http: metrics::HttpMetrics,
    pub started: Instant,
    pub tls: bool,
    /// Becomes true when the server is stopping (WebSockets close on it).
    pub closing: tokio::sync::watch::Sender<bool>,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct ApiState(pub Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl ApiState {
    /// Runs `f` with the store's read connection on a blocking thread.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.blocking(move |s| f(&s.store.lock().unwrap_or_else(|e| e.into_inner())))
            .await
    }

    /// Runs blocking work (auth database, files, models) off the async threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ApiState) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(ApiError::internal)?
    }

    /// Sends a control request to the link stage and waits (at most 10 s) for its answer.
    pub async fn control<T: Send + 'static>(
        &self,
        make: impl FnOnce(crate::server::Reply<T>) -> crate::server::Control + Send + 'static,
    ) -> ApiResult<T> {
        let ctl = self.server.control();
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = crossbeam_channel::bounded(1);
            ctl.send(make(tx))
                .map_err(|_| ApiError::unavailable("the server is shutting down"))?;
            rx.recv_timeout(Duration::from_secs(10))
                .map_err(|_| ApiError::unavailable("the link stage did not answer in 10 s"))?
                .map_err(ApiError::from)
        })
        .await
        .map_err(ApiError::internal)?
    }
}

/// The token a request carries: `Authorization: Bearer …`, else the session cookie.
pub fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(|t| t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Middleware of every protected route: authenticates and checks the role.
pub async fn require(
    State((state, need)): State<(ApiState, Need)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // a browser sends the session cookie with requests other sites make it send: refuse those
    // (the cookie is SameSite=Strict too); programs send their token in the header
    if req.headers().get(header::AUTHORIZATION).is_none()
        && let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if origin_host != host {
            return Err(ApiError::forbidden(format!(
                "a request from {origin} with this site's session cookie is refused (cross-site)"
            )));
        }
    }
    let token = request_token(req.headers()).ok_or_else(|| {
        ApiError::unauthorized(
            "sign in first: POST /api/v1/login, then send `Authorization: Bearer <token>`",
        )
    })?;
    let caller = state
        .blocking(move |s| Ok(s.auth.authenticate(&token)?))
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("the token is unknown or has expired; sign in again")
        })?;
    if !caller.role.allows(need) {
        return Err(ApiError::forbidden(format!(
            "{} ({}) may not do this; it needs the role {}",
            caller.user,
            caller.role,
            need.roles()
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// The client's IP address (for login rate limits), over plain HTTP or TLS.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let e = &parts.extensions;
        let ip = e
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .or_else(|| e.get::<ConnectInfo<tls::TlsAddr>>().map(|c| c.0.0.ip()));
        Ok(ClientAddr(
            ip.map(|i| i.to_string())
                .unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// The running HTTP server.
pub struct ApiHandle {
    pub addr: SocketAddr,
    pub tls: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiHandle {
    /// The base URL (`http://127.0.0.1:8080`).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s), closes WebSockets.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts the API for `server` on `cfg.api.listen` (a port of 0 picks a free one).
pub fn start(cfg: &Config, server: Arc<Server>) -> Result<ApiHandle> {
    let auth = AuthDb::open(&cfg.server.data_dir)?;
    let store = Store::open(&cfg.server.data_dir)?;
    let tls = match (&cfg.api.tls_cert, &cfg.api.tls_key) {
        (Some(c), Some(k)) => Some(tls::server_config(c, k)?),
        _ => None,
    };
    let inner = Inner {
        jobs: jobs::JobManager::new(cfg, server.events.clone()),
        scheduler: schedule::Scheduler::default(),
        server,
        cfg: cfg.clone(),
        auth,
        limiter: auth::LoginLimiter::new(
            cfg.api.login_attempts_per_minute,
            cfg.api.login_attempts_per_user_per_minute,
        ),
        rates: limits::RateLimiter::default(),
        credentials: crate::store::credentials::CredentialStore::open(&cfg.server.data_dir)?,
        store: Mutex::new(store),
        http: metrics::HttpMetrics::default(),
        started: Instant::now(),
        tls: tls.is_some(),
        closing: tokio::sync::watch::channel(false).0,
    };
    let state = ApiState(Arc::new(inner));
    let app = routes::router(state.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_name("api")
        .enable_all()
        .build()
        .context("cannot start the API's runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&cfg.api.listen))
        .with_context(|| {
            format!(
                "cannot listen on {} (api.listen): is another crosscam running? Choose another port in [api] listen",
                cfg.api.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let is_tls = tls.is_some();
    let jobs_state = state.clone();
    let thread = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let closing = jobs_state.closing.clone();
            let sched_state = jobs_state.clone();
            rt.block_on(async move {
                match sched_state.cfg.retune.scheduled() {
                    Ok((sched, req)) => {
                        tokio::spawn(schedule::run(sched_state, sched, req));
                    }
                    Err(e) => tracing::error!("{e}; no scheduled re-tuning"),
                }
                let mut c1 = closing.subscribe();
                let mut c2 = closing.subscribe();
                tokio::spawn(async move {
                    let _ = rx.await;
                    let _ = closing.send(true);
                });
                let stop = async move {
                    let _ = c1.wait_for(|c| *c).await;
                };
                let serve = async move {
                    match tls {
                        Some(tls) => {
                            axum::serve(
                                tls::TlsListener::new(listener, tls),
                                app.into_make_service_with_connect_info::<tls::TlsAddr>(),
                            )
                            .with_graceful_shutdown(stop)
                            .await
                        }
                        None => {
                            axum::serve(
                                listener,
                                app.into_make_service_with_connect_info::<SocketAddr>(),
                            )
                            .with_graceful_shutdown(stop)
                            .await
                        }
                    }
                };
                tokio::select! {
                    r = serve => if let Err(e) = r {
                        tracing::error!("the HTTP server stopped: {e}");
                    },
                    _ = async move {
                        let _ = c2.wait_for(|c| *c).await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    } => tracing::warn!("requests still open 5 s after shutdown began; closed"),
                }
            });
            jobs_state.jobs.cancel_all();
            rt.shutdown_timeout(Duration::from_secs(5));
        })?;
    tracing::info!(url = %format!("{}://{addr}", if is_tls { "https" } else { "http" }), "web UI and API listening");
    Ok(ApiHandle {
        addr,
        tls: is_tls,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}
