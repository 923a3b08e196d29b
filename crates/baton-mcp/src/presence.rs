//! Whether an HTTP host is still there, judged from its HTTP exchanges
//! alone, so heartbeats stop for a host that crashed as they do when a
//! stdio host's pipe closes.
//!
//! Over stdio the session is the pipe. Over streamable HTTP there is no
//! such thing to watch: a 2026-07-28 host sends self-contained requests
//! (no session at all), an older one has a session id that it may never
//! close. So the host counts as present while one of its exchanges is
//! open (a tool call running, a `subscriptions/listen` stream, an older
//! session's GET stream) and for a keep-alive after the last one ended.
//! Deleting the last session (an older host saying goodbye) ends presence
//! at once, unless requests without a session came within the keep-alive.
//!
//! Pure: time comes in as an argument, so the rule is tested without a
//! clock or a socket.

use std::{collections::HashSet, time::Duration};

use tokio::time::Instant;

/// The host's presence, from what its exchanges did.
#[derive(Debug)]
pub struct Presence {
    keep_alive: Duration,
    /// Exchanges begun and not ended (their response not yet over).
    open: usize,
    /// Counts every exchange begun, so a judgement of absence can be
    /// checked to still hold when it is carried out.
    begun: u64,
    /// When the last exchange that counts ended (or began).
    last: Option<Instant>,
    /// The last exchange without a session id (a 2026-07-28 host).
    last_sessionless: Option<Instant>,
    /// Older hosts' sessions, from their first answer to their DELETE.
    sessions: HashSet<String>,
    /// The last session was deleted: no keep-alive to wait for.
    said_goodbye: bool,
    /// The current absence has been acted on.
    handled: bool,
}

/// A judgement of absence, to be confirmed with [`Presence::still_absent`]
/// where it is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absence {
    begun: u64,
}

impl Presence {
    pub fn new(keep_alive: Duration) -> Presence {
        Presence {
            keep_alive,
            open: 0,
            begun: 0,
            last: None,
            last_sessionless: None,
            sessions: HashSet::new(),
            said_goodbye: false,
            handled: false,
        }
    }

    /// An exchange begins (after authentication).
    pub fn begin(&mut self) {
        self.open += 1;
        self.begun += 1;
    }

    /// An exchange ended. `answered`: the server served it (a refused
    /// request, e.g. one with a foreign `Origin`, does not keep the host
    /// present). `session`: the session id it carried.
    pub fn end(&mut self, now: Instant, answered: bool, session: Option<&str>) {
        self.open = self.open.saturating_sub(1);
        if !answered {
            return;
        }
        self.last = Some(now);
        self.handled = false;
        self.said_goodbye = false;
        if session.is_none() {
            self.last_sessionless = Some(now);
        }
    }

    /// An older host's session began (its initialize was answered with a
    /// session id).
    pub fn session_opened(&mut self, id: &str) {
        self.sessions.insert(id.to_string());
    }

    /// An older host deleted its session (call after [`Presence::end`] of
    /// the DELETE).
    pub fn session_deleted(&mut self, now: Instant, id: &str) {
        self.sessions.remove(id);
        let recent_sessionless = self
            .last_sessionless
            .is_some_and(|t| now.saturating_duration_since(t) < self.keep_alive);
        if self.sessions.is_empty() && !recent_sessionless {
            self.said_goodbye = true;
        }
    }

    /// When the host will count as gone if nothing happens meanwhile
    /// (`None`: while an exchange is open, before the first one, or once
    /// the absence was acted on).
    pub fn deadline(&self) -> Option<Instant> {
        if self.open > 0 || self.handled {
            return None;
        }
        let last = self.last?;
        if self.said_goodbye {
            return Some(last);
        }
        Some(last + self.keep_alive)
    }

    /// Whether the host is gone at `now` and this absence was not acted on
    /// yet.
    pub fn absent(&self, now: Instant) -> Option<Absence> {
        self.deadline()
            .filter(|d| now >= *d)
            .map(|_| Absence { begun: self.begun })
    }

    /// Confirms a judgement where it is carried out: nothing began since,
    /// so the absence is marked handled and true is returned.
    pub fn still_absent(&mut self, absence: Absence) -> bool {
        if self.open > 0 || self.begun != absence.begun || self.handled {
            return false;
        }
        self.handled = true;
        true
    }

    pub fn open(&self) -> usize {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(60);

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    /// One exchange from `from` to `to` (seconds after `t0`).
    fn exchange(p: &mut Presence, t0: Instant, to: u64, session: Option<&str>) {
        p.begin();
        p.end(at(t0, to), true, session);
    }

    #[test]
    fn nobody_came_nothing_to_judge() {
        let p = Presence::new(KEEP);
        assert_eq!(p.deadline(), None);
        assert_eq!(p.absent(Instant::now() + KEEP * 10), None);
    }

    #[test]
    fn gone_a_keep_alive_after_the_last_exchange_ended() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        exchange(&mut p, t0, 1, None);
        assert_eq!(p.deadline(), Some(at(t0, 61)));
        assert_eq!(p.absent(at(t0, 60)), None);
        let absence = p.absent(at(t0, 61)).expect("gone");
        assert!(p.still_absent(absence));
        // Acted on once.
        assert_eq!(p.absent(at(t0, 500)), None);
        assert!(!p.still_absent(absence));
    }

    #[test]
    fn an_open_stream_keeps_the_host_present() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        p.begin(); // subscriptions/listen, open for hours
        assert_eq!(p.deadline(), None);
        assert_eq!(p.absent(at(t0, 10_000)), None);
        p.end(at(t0, 10_000), true, None); // the connection closed
        assert_eq!(p.absent(at(t0, 10_059)), None);
        assert!(p.absent(at(t0, 10_060)).is_some());
    }

    #[test]
    fn a_request_meanwhile_voids_the_judgement() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        exchange(&mut p, t0, 0, None);
        let absence = p.absent(at(t0, 60)).expect("gone");
        p.begin(); // a call arrives before the absence is acted on
        assert!(!p.still_absent(absence));
        p.end(at(t0, 61), true, None);
        assert!(!p.still_absent(absence));
        assert_eq!(p.deadline(), Some(at(t0, 121)));
    }

    #[test]
    fn a_host_back_after_an_absence_is_judged_again() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        exchange(&mut p, t0, 0, None);
        assert!(p.still_absent(p.absent(at(t0, 60)).expect("gone")));
        exchange(&mut p, t0, 100, None);
        assert!(p.absent(at(t0, 159)).is_none());
        assert!(p.absent(at(t0, 160)).is_some());
    }

    #[test]
    fn refused_requests_do_not_keep_the_host_present() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        exchange(&mut p, t0, 0, None);
        // A foreign page knocking at 30 s, refused.
        p.begin();
        p.end(at(t0, 30), false, None);
        let absence = p.absent(at(t0, 60)).expect("gone");
        assert!(p.still_absent(absence));
    }

    #[test]
    fn deleting_the_last_session_ends_presence_at_once() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        // Two older hosts' sessions (initialize carries no session id yet).
        p.begin();
        p.end(t0, true, None);
        p.session_opened("a");
        exchange(&mut p, t0, 70, Some("a"));
        p.session_opened("b");
        exchange(&mut p, t0, 80, Some("a")); // DELETE a
        p.session_deleted(at(t0, 80), "a");
        assert_eq!(p.deadline(), Some(at(t0, 140)), "b is still open");
        exchange(&mut p, t0, 90, Some("b")); // DELETE b
        p.session_deleted(at(t0, 90), "b");
        assert!(p.absent(at(t0, 90)).is_some());
    }

    #[test]
    fn a_goodbye_does_not_end_a_sessionless_hosts_presence() {
        let t0 = Instant::now();
        let mut p = Presence::new(KEEP);
        p.session_opened("a");
        exchange(&mut p, t0, 0, None); // a 2026-07-28 host's call
        exchange(&mut p, t0, 5, Some("a")); // DELETE a
        p.session_deleted(at(t0, 5), "a");
        assert_eq!(p.deadline(), Some(at(t0, 65)));
    }
}
