//! The production-like rate limiter (spec 4.2): fixed one-minute windows per client IP and
//! bucket, started by the first request, timed by the emulator clock.

use std::collections::HashMap;

/// One minute, the window of every bucket.
pub const WINDOW_MS: i64 = 60_000;

/// The per-route buckets of `rateLimiter.ts` with their per-minute defaults.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Bucket {
    Global,
    Read,
    Write,
    Secrets,
}

impl Bucket {
    pub fn limit(self) -> u32 {
        match self {
            Bucket::Global => 600,
            Bucket::Read => 60,
            Bucket::Write => 200,
            Bucket::Secrets => 60,
        }
    }

    /// The route bucket of a request; `None` for routes exempt from rate limiting.
    pub fn for_route(method: &str, path: &str) -> Option<Bucket> {
        if path == "/api/status" || path == "/healthcheck" || path == "/api/health" {
            return None;
        }
        let secrets = path.starts_with("/api/v3/secrets")
            || path.starts_with("/api/v4/secrets")
            || path.contains("/folders")
            || path.contains("/secret-imports");
        Some(if secrets {
            Bucket::Secrets
        } else if method == "GET" {
            Bucket::Read
        } else {
            Bucket::Write
        })
    }
}

/// What one check decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the window resets (at least 1).
    pub reset_secs: u64,
}

#[derive(Default)]
pub struct Buckets {
    windows: HashMap<(String, Bucket), (i64, u32)>,
}

impl Buckets {
    /// Counts one request of `ip` against `bucket` at `now_ms`.
    pub fn hit(&mut self, ip: &str, bucket: Bucket, now_ms: i64) -> Decision {
        let limit = bucket.limit();
        let window = self.windows.entry((ip.to_owned(), bucket)).or_insert((now_ms, 0));
        // Saturating: the admin clock may stand anywhere, `i64::MAX` included.
        if now_ms >= window.0.saturating_add(WINDOW_MS) || now_ms < window.0 {
            *window = (now_ms, 0);
        }
        let reset_ms = window.0.saturating_add(WINDOW_MS).saturating_sub(now_ms);
        let reset_secs = u64::try_from(reset_ms.saturating_add(999) / 1000).unwrap_or(1).max(1);
        if window.1 >= limit {
            return Decision { allowed: false, limit, remaining: 0, reset_secs };
        }
        window.1 += 1;
        Decision { allowed: true, limit, remaining: limit - window.1, reset_secs }
    }

    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_then_refuses_until_the_window_ends() {
        let mut b = Buckets::default();
        for i in 0..60 {
            let d = b.hit("1.2.3.4", Bucket::Secrets, 1_000 + i);
            assert!(d.allowed);
            assert_eq!(d.remaining, 59 - u32::try_from(i).unwrap());
        }
        let refused = b.hit("1.2.3.4", Bucket::Secrets, 31_000);
        assert_eq!(refused, Decision { allowed: false, limit: 60, remaining: 0, reset_secs: 30 });
        assert!(
            b.hit("5.6.7.8", Bucket::Secrets, 31_000).allowed,
            "other ips have their own bucket"
        );
        assert!(b.hit("1.2.3.4", Bucket::Read, 31_000).allowed, "other buckets are separate");
        assert!(b.hit("1.2.3.4", Bucket::Secrets, 61_000).allowed, "a new window starts");
    }

    #[test]
    fn the_end_of_time_does_not_overflow() {
        let mut b = Buckets::default();
        let d = b.hit("1.2.3.4", Bucket::Read, i64::MAX);
        assert!(d.allowed);
        assert_eq!(d.reset_secs, 1);
        assert!(b.hit("1.2.3.4", Bucket::Read, i64::MAX - 1).allowed, "an earlier now restarts");
    }

    #[test]
    fn classifies_routes() {
        assert_eq!(Bucket::for_route("GET", "/api/status"), None);
        assert_eq!(Bucket::for_route("GET", "/api/v4/secrets"), Some(Bucket::Secrets));
        assert_eq!(Bucket::for_route("POST", "/api/v1/folders"), Some(Bucket::Secrets));
        assert_eq!(Bucket::for_route("GET", "/api/v1/workspace"), Some(Bucket::Read));
        assert_eq!(
            Bucket::for_route("POST", "/api/v1/auth/universal-auth/login"),
            Some(Bucket::Write)
        );
    }
}
