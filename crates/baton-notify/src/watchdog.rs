//! Is Baton up? The watchdog's judgement, as a pure function of the
//! liveness records in KV `baton-services` (written by
//! `baton_service::liveness`) and the time.
//!
//! A service is alive when one of its instances reported within three of
//! its liveness intervals (at least 5 s), by the broker's stored time of
//! the report: the rule `baton status` applies. Baton is healthy when every
//! required service is alive; then the watchdog fires, and when it is not
//! the watchdog stops (and so does the router itself when it dies), so a
//! dead-man's switch behind Alertmanager notices either way.

use std::time::Duration;

use baton_core::{Time, time::human_duration};

/// One liveness record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub service: String,
    pub instance: String,
    /// Broker time of the report.
    pub reported_at: Time,
    pub interval: Duration,
}

/// How long a report counts as fresh.
pub fn allowed(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(5))
}

/// `Ok(summary)` when every service in `required` has a fresh report at
/// `now`; `Err(why)` naming each one that does not.
pub fn judge(reports: &[Report], required: &[String], now: Time) -> Result<String, String> {
    let mut alive = Vec::new();
    let mut missing = Vec::new();
    for service in required {
        let mut theirs: Vec<&Report> = reports.iter().filter(|r| &r.service == service).collect();
        theirs.sort_by_key(|r| std::cmp::Reverse(r.reported_at));
        match theirs
            .iter()
            .find(|r| now.since(r.reported_at) <= allowed(r.interval))
        {
            Some(r) => alive.push(format!("{service} {}", r.instance)),
            None => match theirs.first() {
                Some(r) => missing.push(format!(
                    "{service} last reported {} ago ({})",
                    human_duration(now.since(r.reported_at)),
                    r.instance
                )),
                None => missing.push(format!("no {service} has reported")),
            },
        }
    }
    if missing.is_empty() {
        Ok(format!("Baton is up: {} report.", alive.join(", ")))
    } else {
        Err(missing.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Time {
        Time::from_unix_millis(1_800_000_000_000 + s * 1000)
    }

    fn report(service: &str, instance: &str, s: u64) -> Report {
        Report {
            service: service.into(),
            instance: instance.into(),
            reported_at: at(s),
            interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn healthy_only_when_every_required_service_is_fresh() {
        let required = vec!["orchestrator".to_string(), "stall-detector".to_string()];
        let reports = vec![
            report("orchestrator", "o1", 100),
            report("stall-detector", "d", 98),
        ];
        let ok = judge(&reports, &required, at(101)).expect("healthy");
        assert!(
            ok.contains("orchestrator o1") && ok.contains("stall-detector d"),
            "{ok}"
        );
        let why = judge(&reports, &required, at(105)).expect_err("detector stale");
        assert!(why.contains("stall-detector last reported 7s ago"), "{why}");
        let why = judge(&reports[..1], &required, at(101)).expect_err("no detector");
        assert!(why.contains("no stall-detector has reported"), "{why}");
        // A second, fresh instance is enough.
        let mut more = reports.clone();
        more.push(report("stall-detector", "d2", 103));
        assert!(judge(&more, &required, at(105)).is_ok());
    }
}
