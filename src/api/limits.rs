//! Per-user rate limits of the expensive endpoints (live snapshots, search by image, rendered
//! exports): a token bucket per user and class, refilled at `[api] <class>_per_minute` and
//! holding ten seconds' worth (at least one request), so short bursts pass and floods get 429
//! with `Retry-After`. One user's flood never uses up another's allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, ApiState, Caller};
use crate::config::ApiSettings;

/// The kinds of expensive request, each with its own allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cost {
    /// A live snapshot (a JPEG encoded per request).
    Snapshot,
    /// A search by image (decoding and embedding an upload).
    Search,
    /// A rendered export (timeline pictures over the whole store).
    Export,
}

impl Cost {
    pub const ALL: [Cost; 3] = [Cost::Snapshot, Cost::Search, Cost::Export];

    pub fn as_str(self) -> &'static str {
        match self {
            Cost::Snapshot => "snapshot",
            Cost::Search => "search",
            Cost::Export => "export",
        }
    }

    /// The `[api]` key of its allowance.
    pub fn key(self) -> &'static str {
        match self {
            Cost::Snapshot => "snapshots_per_minute",
            Cost::Search => "searches_per_minute",
            Cost::Export => "exports_per_minute",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Cost::Snapshot => "snapshots",
            Cost::Search => "searches",
            Cost::Export => "exports",
        }
    }

    pub fn per_minute(self, api: &ApiSettings) -> u32 {
        match self {
            Cost::Snapshot => api.snapshots_per_minute,
            Cost::Search => api.searches_per_minute,
            Cost::Export => api.exports_per_minute,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per (user, cost).
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, Cost), Bucket>>,
}

impl RateLimiter {
    /// Takes one token of `user`'s `cost` bucket (`per_minute` refill): `Err(seconds to wait)`
    /// when it is empty.
    pub fn take(&self, user: &str, cost: Cost, per_minute: u32) -> Result<(), u64> {
        self.take_at(user, cost, per_minute, Instant::now())
    }

    fn take_at(&self, user: &str, cost: Cost, per_minute: u32, now: Instant) -> Result<(), u64> {
        let rate = per_minute.max(1) as f64 / 60.0;
        let capacity = (rate * 10.0).max(1.0);
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 10_000 {
            // users come and go (removed users' buckets): forget the full ones
            b.retain(|_, v| v.tokens + (now - v.at).as_secs_f64() * rate < capacity);
        }
        let e = b.entry((user.to_string(), cost)).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        e.tokens =
            (e.tokens + now.saturating_duration_since(e.at).as_secs_f64() * rate).min(capacity);
        e.at = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - e.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// Middleware of the expensive routes (after sign-in): counts the request against the caller's
/// allowance, or answers 429 with `Retry-After` (counted in `/metrics`).
pub async fn limit(
    State((state, cost)): State<(ApiState, Cost)>,
    Extension(caller): Extension<Caller>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let per_minute = cost.per_minute(&state.cfg.api);
    if let Err(wait) = state.rates.take(&caller.user, cost, per_minute) {
        state.http.limited(cost.as_str());
        return Err(ApiError::too_many(
            wait,
            cost.what(),
            per_minute,
            cost.key(),
        ));
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_per_user_and_refill() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        // 60 a minute: ten at once, then one a second
        for _ in 0..10 {
            assert!(l.take_at("ada", Cost::Search, 60, t0).is_ok());
        }
        let wait = l.take_at("ada", Cost::Search, 60, t0).unwrap_err();
        assert_eq!(wait, 1);
        assert!(
            l.take_at("bob", Cost::Search, 60, t0).is_ok(),
            "another user"
        );
        assert!(
            l.take_at("ada", Cost::Snapshot, 60, t0).is_ok(),
            "another class"
        );
        let t1 = t0 + Duration::from_millis(1100);
        assert!(l.take_at("ada", Cost::Search, 60, t1).is_ok(), "refilled");
        assert!(l.take_at("ada", Cost::Search, 60, t1).is_err());
        // a slow allowance still allows one request, then says how long to wait
        assert!(l.take_at("cy", Cost::Export, 2, t0).is_ok());
        assert_eq!(l.take_at("cy", Cost::Export, 2, t0).unwrap_err(), 30);
    }
}
