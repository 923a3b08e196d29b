//! Artifact leases: every rule of the lease fold, and its invariants under
//! arbitrary event sequences.

use std::time::Duration;

use baton_core::{
    AgentId, WorkflowId,
    alert::AlertKind,
    lease::{
        Artifact, ArtifactName, Fence, LeaseBody, LeaseBook, LeaseDisposition, LeaseEffect,
        LeaseEvent, LeaseMeta, LeaseMode, LeaseOutcome, LeaseRefusal, LeaseWatch, Scope, apply,
    },
    rules::Rules,
    time::Time,
};
use proptest::prelude::*;

fn agent(id: &str) -> AgentId {
    AgentId::new(id).unwrap()
}

fn art(name: &str) -> Artifact {
    Artifact {
        scope: Scope::Global,
        name: ArtifactName::new(name).unwrap(),
    }
}

const TTL: Duration = Duration::from_secs(10);

/// A book and a stream position: each event is stored one sequence later,
/// at the time given.
struct Stream {
    book: LeaseBook,
    seq: u64,
    operators: Vec<AgentId>,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            book: LeaseBook::new(),
            seq: 0,
            operators: Vec::new(),
        }
    }

    fn send(
        &mut self,
        who: &str,
        what: &str,
        token: u64,
        body: LeaseBody,
        at_secs: u64,
    ) -> LeaseOutcome {
        self.seq += 1;
        let event = LeaseEvent {
            event_id: format!("e{}", self.seq),
            agent: agent(who),
            artifact: art(what),
            token,
            occurred_at: None,
            body,
        };
        let meta = LeaseMeta {
            seq: self.seq,
            stored_at: Time::from_unix_millis(at_secs * 1000),
        };
        apply(&mut self.book, &event, meta, &self.operators)
    }

    fn acquire(&mut self, who: &str, what: &str, mode: LeaseMode, at_secs: u64) -> LeaseOutcome {
        let body = LeaseBody::Acquire {
            mode,
            ttl: TTL,
            task: None,
        };
        self.send(who, what, 0, body, at_secs)
    }
}

fn granted_token(outcome: &LeaseOutcome) -> u64 {
    assert_eq!(
        outcome.disposition,
        LeaseDisposition::Applied,
        "{outcome:?}"
    );
    outcome
        .effects
        .iter()
        .find_map(|e| match e {
            LeaseEffect::Granted { hold, .. } | LeaseEffect::HandedOver { hold, .. } => {
                Some(hold.token)
            }
            _ => None,
        })
        .expect("a grant")
}

fn held_by(outcome: &LeaseOutcome) -> (String, AgentId) {
    match &outcome.disposition {
        LeaseDisposition::Refused(LeaseRefusal::Held {
            artifact, holder, ..
        }) => (artifact.name.to_string(), holder.clone()),
        other => panic!("expected a refusal naming the holder, got {other:?}"),
    }
}

use LeaseMode::{Exclusive, Shared};

#[test]
fn one_exclusive_holder_and_the_next_is_told_who() {
    let mut s = Stream::new();
    assert_eq!(
        granted_token(&s.acquire("editor", "drafts/post.md", Exclusive, 0)),
        1
    );
    let (on, holder) = held_by(&s.acquire("publisher", "drafts/post.md", Exclusive, 1));
    assert_eq!((on.as_str(), holder.as_str()), ("drafts/post.md", "editor"));
    // A reader waits for the writer too.
    held_by(&s.acquire("researcher", "drafts/post.md", Shared, 1));
}

#[test]
fn shared_holders_share_and_keep_writers_out_in_both_orders() {
    let mut s = Stream::new();
    granted_token(&s.acquire("r1", "doc", Shared, 0));
    granted_token(&s.acquire("r2", "doc", Shared, 0));
    assert_eq!(held_by(&s.acquire("w", "doc", Exclusive, 1)).0, "doc");
    let mut s = Stream::new();
    granted_token(&s.acquire("w", "doc", Exclusive, 0));
    held_by(&s.acquire("r1", "doc", Shared, 1));
}

#[test]
fn a_folder_and_a_file_in_it_conflict_in_both_orders() {
    let mut s = Stream::new();
    granted_token(&s.acquire("a", "drafts/", Exclusive, 0));
    assert_eq!(
        held_by(&s.acquire("b", "drafts/post.md", Exclusive, 1)).0,
        "drafts"
    );
    // Siblings of another folder are free.
    granted_token(&s.acquire("b", "drafts2/post.md", Exclusive, 1));

    let mut s = Stream::new();
    granted_token(&s.acquire("a", "drafts/post.md", Exclusive, 0));
    assert_eq!(
        held_by(&s.acquire("b", "drafts", Exclusive, 1)).0,
        "drafts/post.md"
    );
    assert_eq!(
        held_by(&s.acquire("b", "drafts", Shared, 1)).0,
        "drafts/post.md"
    );
    // Files side by side do not conflict.
    granted_token(&s.acquire("b", "drafts/other.md", Exclusive, 1));
}

#[test]
fn an_expired_hold_frees_the_artifact_and_the_next_token_is_higher() {
    let mut s = Stream::new();
    let first = granted_token(&s.acquire("editor", "drafts/post.md", Exclusive, 0));
    // Renewed at 8: live until 18.
    let renewed = s.send("editor", "drafts/post.md", first, LeaseBody::Renew, 8);
    assert_eq!(renewed.disposition, LeaseDisposition::Applied);
    held_by(&s.acquire("publisher", "drafts/post.md", Exclusive, 18));
    let taken = s.acquire("publisher", "drafts/post.md", Exclusive, 19);
    assert!(
        taken.effects.iter().any(
            |e| matches!(e, LeaseEffect::Expired { hold, .. } if hold.agent.as_str() == "editor")
        ),
        "{taken:?}"
    );
    let second = granted_token(&taken);
    assert!(second > first);
    // The stuck editor comes back: its renewal and release are refused.
    let late = s.send("editor", "drafts/post.md", first, LeaseBody::Renew, 20);
    assert_eq!(
        late.disposition,
        LeaseDisposition::Refused(LeaseRefusal::NotHolder)
    );
}

#[test]
fn renewals_and_releases_need_the_current_token() {
    let mut s = Stream::new();
    let t = granted_token(&s.acquire("a", "x", Exclusive, 0));
    let stale = s.send("a", "x", t + 1, LeaseBody::Renew, 1);
    assert_eq!(
        stale.disposition,
        LeaseDisposition::Refused(LeaseRefusal::StaleToken { current: t })
    );
    let release = LeaseBody::Release {
        reason: "done".into(),
    };
    assert_eq!(
        s.send("b", "x", t, release.clone(), 1).disposition,
        LeaseDisposition::Refused(LeaseRefusal::NotHolder)
    );
    assert_eq!(
        s.send("a", "x", t, release, 1).disposition,
        LeaseDisposition::Applied
    );
    granted_token(&s.acquire("b", "x", Exclusive, 2));
}

#[test]
fn a_hand_over_moves_the_lease_with_a_new_token() {
    let mut s = Stream::new();
    let t = granted_token(&s.acquire("editor", "drafts/post.md", Exclusive, 0));
    let to = |who: &str| LeaseBody::HandOver {
        to: agent(who),
        ttl: TTL,
    };
    assert_eq!(
        s.send("editor", "drafts/post.md", t, to("editor"), 1)
            .disposition,
        LeaseDisposition::Refused(LeaseRefusal::SelfHandOver)
    );
    let moved = granted_token(&s.send("editor", "drafts/post.md", t, to("publisher"), 1));
    assert!(moved > t);
    let holds = s.book.holds(&art("drafts/post.md"));
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].agent.as_str(), "publisher");
    assert_eq!(
        held_by(&s.acquire("editor", "drafts/post.md", Exclusive, 2))
            .1
            .as_str(),
        "publisher"
    );
}

#[test]
fn a_hand_over_that_would_break_exclusivity_is_refused() {
    // The editor holds the folder and a file in it; handing the folder
    // away would leave two exclusive holders of the file.
    let mut s = Stream::new();
    let folder = granted_token(&s.acquire("editor", "h", Exclusive, 0));
    granted_token(&s.acquire("editor", "h/x", Exclusive, 0));
    let to = LeaseBody::HandOver {
        to: agent("publisher"),
        ttl: TTL,
    };
    assert_eq!(
        held_by(&s.send("editor", "h", folder, to, 1)),
        ("h/x".into(), agent("editor"))
    );
    assert_eq!(s.book.holds(&art("h"))[0].agent.as_str(), "editor");
}

#[test]
fn only_operators_revoke() {
    let mut s = Stream::new();
    s.operators = vec![agent("ops")];
    let t = granted_token(&s.acquire("a", "x", Exclusive, 0));
    let revoke = LeaseBody::Revoke {
        holder: agent("a"),
        reason: "stuck".into(),
    };
    assert_eq!(
        s.send("b", "x", 0, revoke.clone(), 1).disposition,
        LeaseDisposition::Refused(LeaseRefusal::NotOperator)
    );
    let out = s.send("ops", "x", 0, revoke, 1);
    assert!(out.effects.contains(&LeaseEffect::Revoked {
        artifact: art("x"),
        holder: agent("a"),
        by: agent("ops"),
        token: t,
    }));
    granted_token(&s.acquire("b", "x", Exclusive, 2));
}

#[test]
fn scopes_do_not_conflict() {
    let mut book = LeaseBook::new();
    let body = LeaseBody::Acquire {
        mode: Exclusive,
        ttl: TTL,
        task: None,
    };
    for (seq, (who, scope)) in [
        ("a", Scope::Global),
        ("b", Scope::Workflow(WorkflowId::new("w1").unwrap())),
    ]
    .into_iter()
    .enumerate()
    {
        let event = LeaseEvent {
            event_id: format!("e{seq}"),
            agent: agent(who),
            artifact: Artifact {
                scope,
                name: ArtifactName::new("doc").unwrap(),
            },
            token: 0,
            occurred_at: None,
            body: body.clone(),
        };
        let meta = LeaseMeta {
            seq: seq as u64 + 1,
            stored_at: Time::from_unix_millis(0),
        };
        assert_eq!(
            apply(&mut book, &event, meta, &[]).disposition,
            LeaseDisposition::Applied
        );
    }
}

#[test]
fn the_fence_refuses_lower_tokens_on_a_name_and_below_it() {
    let mut fence = Fence::new();
    let post = ArtifactName::new("drafts/post.md").unwrap();
    fence.admit(&post, 3).unwrap();
    fence.admit(&post, 3).unwrap();
    let err = fence.admit(&post, 2).unwrap_err();
    assert_eq!((err.token, err.seen), (2, 3));
    fence
        .admit(&ArtifactName::new("drafts").unwrap(), 5)
        .unwrap();
    assert!(
        fence.admit(&post, 4).is_err(),
        "a write under drafts/ with an older token"
    );
    fence.admit(&post, 6).unwrap();
}

fn wait(mode: LeaseMode, secs: u64) -> LeaseBody {
    LeaseBody::Wait {
        mode,
        ttl: Duration::from_secs(secs),
    }
}

#[test]
fn a_refused_agent_waits_until_granted_its_wait_lapses_or_it_withdraws() {
    let mut s = Stream::new();
    granted_token(&s.acquire("editor", "drafts/post.md", Exclusive, 0));
    held_by(&s.acquire("researcher", "drafts/post.md", Shared, 1));
    s.send("researcher", "drafts/post.md", 0, wait(Shared, 30), 1);
    // A wait on the folder is kept out by the file's holder too.
    s.send("publisher", "drafts", 0, wait(Exclusive, 30), 2);
    let post = art("drafts/post.md");
    let hold = s.book.holds(&post)[0].clone();
    let at = Time::from_unix_millis(3000);
    let blocked: Vec<_> = s
        .book
        .blocked_by(&post, &hold, at)
        .map(|(a, w)| (a.name.to_string(), w.agent.to_string()))
        .collect();
    assert_eq!(
        blocked,
        [
            ("drafts".to_string(), "publisher".to_string()),
            ("drafts/post.md".to_string(), "researcher".to_string())
        ]
    );
    // Waiting again keeps the start.
    s.send("researcher", "drafts/post.md", 0, wait(Shared, 30), 10);
    assert_eq!(s.book.waiters(&post)[0].since, Time::from_unix_millis(1000));
    // Released, the researcher is granted: its wait ends.
    s.send(
        "editor",
        "drafts/post.md",
        hold.token,
        LeaseBody::Release {
            reason: String::new(),
        },
        11,
    );
    granted_token(&s.acquire("researcher", "drafts/post.md", Shared, 12));
    assert!(s.book.waiters(&post).is_empty());
    // A zero ttl withdraws; a lapsed wait is dropped by the next event.
    s.send("publisher", "drafts", 0, wait(Exclusive, 0), 13);
    assert!(s.book.waiters(&art("drafts")).is_empty());
    s.send("editor", "drafts/other.md", 0, wait(Exclusive, 1), 14);
    s.send("x", "drafts/z", 0, LeaseBody::Sweep, 16);
    assert!(s.book.waiters(&art("drafts/other.md")).is_empty());
    // Waits change no hold and no token.
    assert_eq!(s.book.last_token(&post.root()), 2);
}

fn watch_with_rule(rule: &str) -> LeaseWatch {
    LeaseWatch::new(agent("sweeper"), Vec::new(), Duration::from_secs(3600))
        .with_rules(Rules::from_toml(rule).unwrap())
}

fn feed(
    watch: &mut LeaseWatch,
    seq: u64,
    who: &str,
    what: &str,
    token: u64,
    body: LeaseBody,
    at_secs: u64,
) -> Vec<baton_core::alert::Alert> {
    let event = LeaseEvent {
        event_id: format!("e{seq}"),
        agent: agent(who),
        artifact: art(what),
        token,
        occurred_at: None,
        body,
    };
    let meta = LeaseMeta {
        seq,
        stored_at: Time::from_unix_millis(at_secs * 1000),
    };
    watch.handle_event(&event, meta, meta.stored_at)
}

#[test]
fn an_exclusive_lease_held_past_its_limit_while_others_wait_is_reported_once() {
    let mut w = watch_with_rule("[[leases]]\nartifact = \"drafts/\"\nmax_hold = \"60s\"\n");
    let acquire = |mode| LeaseBody::Acquire {
        mode,
        ttl: Duration::from_secs(600),
        task: None,
    };
    feed(
        &mut w,
        1,
        "editor",
        "drafts/post.md",
        0,
        acquire(Exclusive),
        0,
    );
    // Past the limit, nobody waiting: nothing.
    assert!(w.due_reports(Time::from_unix_millis(100_000)).is_empty());
    feed(
        &mut w,
        2,
        "publisher",
        "drafts/post.md",
        0,
        wait(Exclusive, 600),
        100,
    );
    // Waiting, but within the limit... (the limit counts from the grant)
    let reports = w.due_reports(Time::from_unix_millis(101_000));
    assert_eq!(reports.len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r.kind, AlertKind::LeaseHeldTooLong);
    assert_eq!(
        r.agents.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        ["editor", "publisher"]
    );
    assert_eq!(r.epoch, 1);
    assert!(r.summary.contains("over its limit of 1m"), "{}", r.summary);
    // Once per grant.
    assert!(w.due_reports(Time::from_unix_millis(200_000)).is_empty());
    // A new grant to the editor, with the publisher still waiting, is a new
    // grant: reported again once past the limit.
    feed(
        &mut w,
        3,
        "editor",
        "drafts/post.md",
        0,
        acquire(Exclusive),
        210,
    );
    assert!(w.due_reports(Time::from_unix_millis(250_000)).is_empty());
    assert_eq!(w.due_reports(Time::from_unix_millis(271_000)).len(), 1);
    // No rule, no report; shared holds are never reported.
    let mut w = watch_with_rule("[[leases]]\nartifact = \"other\"\nmax_hold = \"1s\"\n");
    feed(
        &mut w,
        1,
        "editor",
        "drafts/post.md",
        0,
        acquire(Exclusive),
        0,
    );
    feed(
        &mut w,
        2,
        "publisher",
        "drafts/post.md",
        0,
        wait(Exclusive, 600),
        1,
    );
    assert!(w.due_reports(Time::from_unix_millis(500_000)).is_empty());
    let mut w = watch_with_rule("[[leases]]\nartifact = \"drafts\"\nmax_hold = \"1s\"\n");
    feed(&mut w, 1, "reader", "drafts/post.md", 0, acquire(Shared), 0);
    feed(
        &mut w,
        2,
        "editor",
        "drafts/post.md",
        0,
        wait(Exclusive, 600),
        1,
    );
    assert!(w.due_reports(Time::from_unix_millis(500_000)).is_empty());
}

#[test]
fn a_lapse_is_reported_after_a_delay_unless_a_broker_outage_kept_the_renewal_out() {
    let acquire = LeaseBody::Acquire {
        mode: Exclusive,
        ttl: Duration::from_secs(10),
        task: None,
    };
    let secs = |s: u64| Time::from_unix_millis(s * 1000);
    // Granted at 2, live until 12; a sweep at 20 finds it lapsed.
    let lapse = |w: &mut LeaseWatch| {
        feed(w, 1, "editor", "drafts/post.md", 0, acquire.clone(), 2);
        let at_once = feed(w, 2, "sweeper", "drafts/x", 0, LeaseBody::Sweep, 20);
        assert!(at_once.is_empty(), "held back: {at_once:?}");
    };
    let mut w = watch_with_rule("");
    lapse(&mut w);
    assert!(w.due_reports(secs(21)).is_empty());
    let reports = w.due_reports(secs(22));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].kind, AlertKind::LeaseExpired);
    assert!(w.due_reports(secs(60)).is_empty(), "once");

    // The broker was out from 8 to 14, across the last renewal window.
    let mut w = watch_with_rule("");
    lapse(&mut w);
    w.record_outage(secs(8), secs(14));
    assert!(w.due_reports(secs(60)).is_empty());
    // Recorded before the lapse is folded: excused too.
    let mut w = watch_with_rule("");
    w.record_outage(secs(8), secs(14));
    lapse(&mut w);
    assert!(w.due_reports(secs(60)).is_empty());
    // An outage before the grant excuses nothing.
    let mut w = watch_with_rule("");
    w.record_outage(Time::EPOCH, secs(1));
    lapse(&mut w);
    w.record_outage(secs(15), secs(16));
    assert_eq!(w.due_reports(secs(60)).len(), 1);
}

#[test]
fn a_stale_write_reported_by_a_store_is_an_alert_naming_writer_and_holder() {
    let mut w = watch_with_rule("");
    let acquire = LeaseBody::Acquire {
        mode: Exclusive,
        ttl: Duration::from_secs(600),
        task: None,
    };
    feed(&mut w, 1, "editor", "drafts/post.md", 0, acquire, 0);
    let reports = feed(
        &mut w,
        2,
        "store",
        "drafts/post.md",
        0,
        LeaseBody::StaleWrite {
            writer: Some(agent("old-editor")),
            token: 0,
            highest_seen: 1,
        },
        5,
    );
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.kind, AlertKind::LeaseStaleWrite);
    assert_eq!(
        r.agents.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        ["old-editor", "store"]
    );
    assert!(
        r.summary.contains("held now by editor (token 1)"),
        "{}",
        r.summary
    );
    // The report changed no hold.
    assert_eq!(w.book().holds(&art("drafts/post.md")).len(), 1);
}

#[test]
fn lease_rules_pick_the_most_specific_and_bad_ones_name_the_field() {
    let rules = Rules::from_toml(
        "[[leases]]\nartifact = \"drafts\"\nmax_hold = \"10m\"\n\
         [[leases]]\nartifact = \"drafts/post.md\"\nmax_hold = \"1m\"\n\
         [[leases]]\nartifact = \"drafts\"\nworkflow = \"blog\"\nmax_hold = \"5m\"\n",
    )
    .unwrap();
    let blog = |name: &str| Artifact {
        scope: Scope::Workflow(WorkflowId::new("blog").unwrap()),
        name: ArtifactName::new(name).unwrap(),
    };
    assert_eq!(
        rules.max_hold(&art("drafts/a")),
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        rules.max_hold(&blog("drafts/a")),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        rules.max_hold(&blog("drafts/post.md")),
        Some(Duration::from_secs(60))
    );
    assert_eq!(rules.max_hold(&art("drafts2")), None);
    for (bad, field) in [
        (
            "[[leases]]\nartifact = \"a//b\"\nmax_hold = \"1m\"\n",
            "leases[0].artifact",
        ),
        (
            "[[leases]]\nartifact = \"a\"\nmax_hold = \"off\"\n",
            "leases[0].max_hold",
        ),
        (
            "[[leases]]\nartifact = \"a\"\nmax_hold = \"soon\"\n",
            "leases[0].max_hold",
        ),
    ] {
        let err = Rules::from_toml(bad).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
}

// --- invariants under arbitrary sequences ---

const AGENTS: [&str; 4] = ["a", "b", "c", "ops"];
const NAMES: [&str; 6] = ["d", "d/x", "d/y", "d/x/z", "e", "e/x"];

#[derive(Debug, Clone)]
enum Act {
    Acquire(LeaseMode, u64),
    Renew,
    RenewStale,
    Release,
    HandOver(usize),
    Revoke(usize),
    Wait(LeaseMode, u64),
    StaleWrite,
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        3 => (prop_oneof![Just(Exclusive), Just(Shared)], 1u64..20).prop_map(|(m, t)| Act::Acquire(m, t)),
        3 => Just(Act::Renew),
        1 => Just(Act::RenewStale),
        1 => Just(Act::Release),
        1 => (0..AGENTS.len()).prop_map(Act::HandOver),
        1 => (0..AGENTS.len()).prop_map(Act::Revoke),
        2 => (prop_oneof![Just(Exclusive), Just(Shared)], 0u64..20).prop_map(|(m, t)| Act::Wait(m, t)),
        1 => Just(Act::StaleWrite),
    ]
}

/// (agent, name, act, seconds since the previous event)
fn events() -> impl Strategy<Value = Vec<(usize, usize, Act, u64)>> {
    prop::collection::vec((0..AGENTS.len(), 0..NAMES.len(), act(), 0u64..8), 1..80)
}

/// The events of a script, with token 0: [`run`] sets each token as it
/// folds.
fn build(script: &[(usize, usize, Act, u64)]) -> Vec<LeaseEvent> {
    script
        .iter()
        .enumerate()
        .map(|(i, (who, what, act, _))| {
            let body = match act {
                Act::Acquire(mode, ttl) => LeaseBody::Acquire {
                    mode: *mode,
                    ttl: Duration::from_secs(*ttl),
                    task: None,
                },
                Act::Renew | Act::RenewStale => LeaseBody::Renew,
                Act::Release => LeaseBody::Release {
                    reason: String::new(),
                },
                Act::HandOver(to) => LeaseBody::HandOver {
                    to: agent(AGENTS[*to]),
                    ttl: TTL,
                },
                Act::Revoke(holder) => LeaseBody::Revoke {
                    holder: agent(AGENTS[*holder]),
                    reason: String::new(),
                },
                Act::Wait(mode, ttl) => LeaseBody::Wait {
                    mode: *mode,
                    ttl: Duration::from_secs(*ttl),
                },
                Act::StaleWrite => LeaseBody::StaleWrite {
                    writer: Some(agent("a")),
                    token: 1,
                    highest_seen: 2,
                },
            };
            LeaseEvent {
                event_id: format!("e{i}"),
                agent: agent(AGENTS[*who]),
                artifact: art(NAMES[*what]),
                token: 0,
                occurred_at: None,
                body,
            }
        })
        .collect()
}

/// Folds the script, giving each renewal, release and hand-over the token
/// its sender holds (or a wrong one, for `RenewStale`); returns every
/// (event, meta) as stored and the outcomes.
fn run(
    script: &[(usize, usize, Act, u64)],
) -> (LeaseBook, Vec<(LeaseEvent, LeaseMeta)>, Vec<LeaseOutcome>) {
    let mut book = LeaseBook::new();
    let operators = vec![agent("ops")];
    let mut stored = Vec::new();
    let mut outcomes = Vec::new();
    let mut now = 0;
    for (i, mut event) in build(script).into_iter().enumerate() {
        now += script[i].3;
        let held = book
            .holds(&event.artifact)
            .iter()
            .find(|h| h.agent == event.agent)
            .map_or(0, |h| h.token);
        event.token = match script[i].2 {
            Act::RenewStale => held + 1,
            Act::Acquire(..) | Act::Revoke(_) | Act::Wait(..) | Act::StaleWrite => 0,
            _ => held,
        };
        let meta = LeaseMeta {
            seq: i as u64 + 1,
            stored_at: Time::from_unix_millis(now * 1000),
        };
        outcomes.push(apply(&mut book, &event, meta, &operators));
        stored.push((event, meta));
    }
    (book, stored, outcomes)
}

proptest! {
    /// No two holds in the book conflict: for any two holds of different
    /// agents on overlapping names, both are shared.
    #[test]
    fn holds_never_conflict(script in events()) {
        let (book, _, _) = run(&script);
        let all: Vec<_> = book.iter().flat_map(|(a, hs)| hs.iter().map(move |h| (a, h))).collect();
        for (i, (a1, h1)) in all.iter().enumerate() {
            for (a2, h2) in &all[i + 1..] {
                if a1.overlaps(a2) && h1.agent != h2.agent {
                    prop_assert!(
                        h1.mode == Shared && h2.mode == Shared,
                        "{a1} {h1:?} conflicts with {a2} {h2:?}"
                    );
                }
            }
        }
    }

    /// Every grant's token is higher than every earlier grant's in its
    /// root, so a fence that saw an older holder's write admits the new
    /// holder's and refuses the old one's.
    #[test]
    fn tokens_grow_with_every_grant_in_a_root(script in events()) {
        let (_, stored, outcomes) = run(&script);
        let mut last: std::collections::BTreeMap<String, u64> = Default::default();
        for ((event, _), outcome) in stored.iter().zip(&outcomes) {
            for effect in &outcome.effects {
                if let LeaseEffect::Granted { hold, .. } | LeaseEffect::HandedOver { hold, .. } = effect {
                    let root = event.artifact.name.root().to_string();
                    let before = last.insert(root, hold.token).unwrap_or(0);
                    prop_assert!(hold.token > before);
                }
            }
        }
    }

    /// Folding only one root's events gives that root the same holds as
    /// folding everything: what makes the SDK's compare-and-set over a
    /// root sound.
    #[test]
    fn a_root_folds_alone_as_in_the_whole_stream(script in events()) {
        let (book, stored, _) = run(&script);
        let operators = vec![agent("ops")];
        for root in ["d", "e"] {
            let mut alone = LeaseBook::new();
            for (event, meta) in stored.iter().filter(|(e, _)| e.artifact.name.root() == root) {
                apply(&mut alone, event, *meta, &operators);
            }
            let whole: Vec<_> = book.iter().filter(|(a, _)| a.name.root() == root).collect();
            let part: Vec<_> = alone.iter().collect();
            prop_assert_eq!(whole, part);
            let whole: Vec<_> = book.iter_waits().filter(|(a, _)| a.name.root() == root).collect();
            let part: Vec<_> = alone.iter_waits().collect();
            prop_assert_eq!(whole, part);
        }
    }

    /// Waits and stale-write reports change no hold and no token: the live
    /// holds at the end are those of the same script without them.
    #[test]
    fn waits_and_reports_change_no_hold(script in events()) {
        let (book, stored, _) = run(&script);
        let end = stored.last().map_or(Time::EPOCH, |(_, m)| m.stored_at);
        let operators = vec![agent("ops")];
        let mut without = LeaseBook::new();
        for (event, meta) in &stored {
            if !matches!(event.body, LeaseBody::Wait { .. } | LeaseBody::StaleWrite { .. }) {
                apply(&mut without, event, *meta, &operators);
            }
        }
        let live = |b: &LeaseBook| -> Vec<(Artifact, baton_core::lease::Hold)> {
            b.iter()
                .flat_map(|(a, hs)| hs.iter().map(move |h| (a.clone(), h.clone())))
                .filter(|(_, h)| h.expires_at() >= end)
                .collect()
        };
        prop_assert_eq!(live(&book), live(&without));
        for root in ["d", "e"] {
            let root = art(root).root();
            prop_assert_eq!(book.last_token(&root), without.last_token(&root));
        }
    }

    /// A root's state, stored (encoded, decoded) and restored into a fresh
    /// book at any point of the stream, then fed the rest of the root's
    /// events, ends where the uninterrupted fold does: what makes the
    /// orchestrator's materialised leases (and a restart from them) sound.
    #[test]
    fn a_root_restored_from_its_stored_state_folds_on_as_before(script in events(), cut in 0usize..80) {
        let (book, stored, _) = run(&script);
        let operators = vec![agent("ops")];
        let cut = cut.min(stored.len());
        for root in ["d", "e"] {
            let in_root: Vec<_> = stored.iter().filter(|(e, _)| e.artifact.name.root() == root).collect();
            let mut before = LeaseBook::new();
            let mut last_seq = 0;
            for (event, meta) in in_root.iter().filter(|(_, m)| m.seq as usize <= cut) {
                apply(&mut before, event, *meta, &operators);
                last_seq = meta.seq;
            }
            let state = before.root_state(&art(root), last_seq);
            let decoded = baton_core::lease::RootState::decode(&state.encode()).expect("decodes");
            prop_assert_eq!(&decoded, &state);
            let mut restored = LeaseBook::new();
            restored.restore_root(&decoded);
            for (event, meta) in in_root.iter().filter(|(_, m)| m.seq > decoded.last_seq) {
                apply(&mut restored, event, *meta, &operators);
            }
            let whole: Vec<_> = book.iter().filter(|(a, _)| a.name.root() == root).collect();
            prop_assert_eq!(whole, restored.iter().collect::<Vec<_>>());
            let whole: Vec<_> = book.iter_waits().filter(|(a, _)| a.name.root() == root).collect();
            prop_assert_eq!(whole, restored.iter_waits().collect::<Vec<_>>());
            prop_assert_eq!(book.last_token(&art(root).root()), restored.last_token(&art(root).root()));
        }
    }

    /// A grant ends the grantee's wait on that artifact.
    #[test]
    fn a_grant_ends_the_wait(script in events()) {
        let (_, stored, _) = run(&script);
        let mut book = LeaseBook::new();
        let operators = vec![agent("ops")];
        for (event, meta) in &stored {
            let out = apply(&mut book, event, *meta, &operators);
            for effect in &out.effects {
                if let LeaseEffect::Granted { artifact, hold } | LeaseEffect::HandedOver { artifact, hold, .. } = effect {
                    prop_assert!(book.waiters(artifact).iter().all(|w| w.agent != hold.agent));
                }
            }
        }
    }

    /// A stale token never changes a hold.
    #[test]
    fn stale_renewals_are_refused(script in events()) {
        let (_, stored, outcomes) = run(&script);
        for ((i, (_, _)), outcome) in stored.iter().enumerate().zip(&outcomes) {
            if matches!(script[i].2, Act::RenewStale) {
                prop_assert!(matches!(outcome.disposition, LeaseDisposition::Refused(_)), "{outcome:?}");
            }
        }
    }

    /// Replaying an event already folded in changes nothing.
    #[test]
    fn replays_change_nothing(script in events()) {
        let (mut book, stored, _) = run(&script);
        let before = book.clone();
        for (event, meta) in &stored {
            let out = apply(&mut book, event, *meta, &[]);
            prop_assert_eq!(out.disposition, LeaseDisposition::Duplicate);
        }
        prop_assert_eq!(book, before);
    }
}
