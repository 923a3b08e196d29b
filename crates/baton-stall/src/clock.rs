//! The detector's notion of now: deadlines come from the broker's stored
//! times (wall clock), and are evaluated against a monotonic clock anchored
//! to the wall clock once at start, so a wall-clock jump on this host
//! cannot fire or hold back every deadline at once. Tests drive a manual
//! clock instead (virtual time, no sleeps).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use baton_core::Time;
use tokio::sync::Notify;

/// A source of `now` that can also wait until a time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall time at start, advanced by the monotonic clock.
    System { wall: Time, mono: Instant },
    /// Virtual time, advanced by hand.
    Manual(Arc<ManualClock>),
}

/// Virtual time for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Time>,
    changed: Notify,
}

impl ManualClock {
    pub fn new(start: Time) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: Mutex::new(start),
            changed: Notify::new(),
        })
    }

    pub fn now(&self) -> Time {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves time forward and wakes whoever waits on it.
    pub fn advance(&self, by: Duration) {
        {
            let mut now = self
                .now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *now = now.saturating_add(by);
        }
        self.changed.notify_waiters();
    }

    /// Sets the time (never backwards).
    pub fn set(&self, to: Time) {
        {
            let mut now = self
                .now
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *now = (*now).max(to);
        }
        self.changed.notify_waiters();
    }
}

impl Clock {
    /// The system clock, anchored now.
    pub fn system() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock::System {
            wall: Time::from_unix_nanos(u64::try_from(wall.as_nanos()).unwrap_or(0)),
            mono: Instant::now(),
        }
    }

    pub fn now(&self) -> Time {
        match self {
            Clock::System { wall, mono } => wall.saturating_add(mono.elapsed()),
            Clock::Manual(m) => m.now(),
        }
    }

    /// Completes when `now() >= at`.
    pub async fn sleep_until(&self, at: Time) {
        match self {
            Clock::System { .. } => {
                let wait = at.since(self.now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            Clock::Manual(m) => loop {
                let notified = m.changed.notified();
                if m.now() >= at {
                    return;
                }
                notified.await;
            },
        }
    }
}
