//! Time, passed in. Core logic never reads the OS clock itself.

use std::sync::atomic::{AtomicI64, Ordering};

/// Wall-clock milliseconds since the Unix epoch, as Kafka timestamps are,
/// and a monotonic clock for timeouts. Under the simulator both are
/// simulated; the wall clock may jump, the monotonic one never does.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    /// Milliseconds from an arbitrary origin, never going back or jumping:
    /// what session timeouts and deadlines are measured with, so that a
    /// wall-clock step (NTP) neither expires every member nor freezes them.
    fn monotonic_ms(&self) -> i64;
}

/// The system clock. (Under madsim, `SystemTime` is the simulated one.)
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> i64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as i64
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    /// The same reading: tests move it forward only.
    fn monotonic_ms(&self) -> i64 {
        self.now_ms()
    }
}
