//! Artifact leases through the Rust SDK against a real nats-server (streams
//! created by the real orchestrator): racing acquirers, conflicts by mode
//! and by hierarchy, expiry of a silent holder, hand-over, and a fenced file
//! store refusing a late write.

mod support;

use std::time::Duration;

use baton_agent::{
    Agent, AgentOptions, ClaimError, Lease, LeaseError, LeaseOptions, NewTask,
    core::lease::{ArtifactName, LeaseMode},
    fence::{FencedDir, FencedWriteError},
};
use baton_core::{
    AlertKind,
    lease::{LeaseBody, LeaseBook, LeaseEvent, LeaseMeta, RootState, apply},
    subjects,
    wire::read_lease_event,
};
use futures::future::join_all;
use support::*;

use LeaseMode::{Exclusive, Shared};

async fn connect(rig: &Rig, id: &str) -> Agent {
    Agent::connect(AgentOptions::new(id, rig.server.url()))
        .await
        .expect("agent connects")
}

async fn rig() -> Rig {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    rig
}

/// The holder a refusal names, or a panic saying what came instead.
fn holder_of(result: Result<Lease, LeaseError>) -> (String, String) {
    match result {
        Err(LeaseError::Held {
            artifact, holder, ..
        }) => (artifact, holder.to_string()),
        Err(e) => panic!("expected Held, got {e}"),
        Ok(lease) => panic!("expected Held, got {lease:?}"),
    }
}

#[tokio::test]
async fn sixteen_racing_exclusive_acquirers_one_holder_the_rest_told_who() {
    let rig = rig().await;
    let agents = join_all((0..16).map(|i| {
        let url = rig.server.url();
        async move {
            Agent::connect(AgentOptions::new(format!("a{i}"), url))
                .await
                .expect("connect")
        }
    }))
    .await;
    let results = join_all(
        agents
            .iter()
            .map(|a| a.acquire("drafts/post.md", Exclusive)),
    )
    .await;
    let winners: Vec<&Lease> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one exclusive holder: {results:?}"
    );
    let winner = agents[results.iter().position(Result::is_ok).expect("a winner")]
        .id()
        .to_string();
    assert_eq!(winners[0].token(), 1);
    for r in &results {
        match r {
            Ok(_) => {}
            Err(LeaseError::Held {
                artifact, holder, ..
            }) => {
                assert_eq!(artifact, "drafts/post.md");
                assert_eq!(holder.as_str(), winner);
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    // The compare-and-set kept the losers' acquisitions out of the stream
    // (the fold would refuse them too, but they are never stored); each
    // loser is recorded as waiting instead.
    let stored: Vec<LeaseEvent> = read_all(&rig.js, subjects::ARTIFACTS_STREAM, "baton.art.>")
        .await
        .iter()
        .map(|s| read_lease_event(&s.subject, &s.payload).expect("a lease event"))
        .collect();
    let acquisitions = stored
        .iter()
        .filter(|e| matches!(e.body, LeaseBody::Acquire { .. }))
        .count();
    assert_eq!(acquisitions, 1, "only the winner's acquisition is stored");
    let book = agents[0].leases(None).await.expect("leases");
    let post = book.iter().next().expect("the held artifact").0.clone();
    let mut waiting: Vec<String> = book
        .waiters(&post)
        .iter()
        .map(|w| w.agent.to_string())
        .collect();
    waiting.sort();
    let mut losers: Vec<String> = agents
        .iter()
        .map(|a| a.id().to_string())
        .filter(|a| *a != winner)
        .collect();
    losers.sort();
    assert_eq!(waiting, losers, "every loser waits");
    drop(results);
    for a in &agents {
        a.close().await;
    }
}

#[tokio::test]
async fn modes_and_folders_conflict_in_both_orders_and_readers_share() {
    let rig = rig().await;
    let editor = connect(&rig, "editor").await;
    let researcher = connect(&rig, "researcher").await;
    let reader2 = connect(&rig, "reader2").await;

    // Exclusive first, then shared: refused, naming the editor.
    let edit = editor
        .acquire("drafts/post.md", Exclusive)
        .await
        .expect("editor");
    assert_eq!(
        holder_of(researcher.acquire("drafts/post.md", Shared).await),
        ("drafts/post.md".into(), "editor".into())
    );
    // A folder above the file: refused too.
    assert_eq!(
        holder_of(researcher.acquire("drafts/", Shared).await).1,
        "editor"
    );
    // Released: now several readers hold it together.
    edit.release("revised").await.expect("release");
    let r1 = researcher
        .acquire("drafts/post.md", Shared)
        .await
        .expect("reader 1");
    let r2 = reader2
        .acquire("drafts/post.md", Shared)
        .await
        .expect("reader 2");
    assert!(r2.token() > r1.token());
    // Shared first, then exclusive: refused.
    assert_eq!(
        holder_of(editor.acquire("drafts/post.md", Exclusive).await).0,
        "drafts/post.md"
    );
    r1.release("read").await.expect("release");
    r2.release("read").await.expect("release");

    // A folder, then a file in it.
    let folder = editor.acquire("drafts", Exclusive).await.expect("folder");
    assert_eq!(
        holder_of(researcher.acquire("drafts/other.md", Exclusive).await),
        ("drafts".into(), "editor".into())
    );
    // Another root is unaffected.
    let elsewhere = researcher
        .acquire("published/post.md", Exclusive)
        .await
        .expect("other root");
    folder.release("done").await.expect("release");
    // A file, then the folder above it.
    let file = researcher
        .acquire("drafts/other.md", Exclusive)
        .await
        .expect("file");
    assert_eq!(
        holder_of(editor.acquire("drafts/", Exclusive).await),
        ("drafts/other.md".into(), "researcher".into())
    );
    file.release("done").await.expect("release");
    elsewhere.release("done").await.expect("release");
    for a in [&editor, &researcher, &reader2] {
        a.close().await;
    }
}

/// Acquires until granted: the lease it waits for is expected to lapse.
async fn acquire_once_free(agent: &Agent, name: &str) -> (Lease, Vec<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut refusals = Vec::new();
    loop {
        match agent.acquire(name, Exclusive).await {
            Ok(lease) => return (lease, refusals),
            Err(LeaseError::Held { holder, .. }) => refusals.push(holder.to_string()),
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became free; refused by {refusals:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_silent_holder_lapses_the_next_holder_gets_a_higher_token_and_the_late_write_is_refused()
{
    let rig = rig().await;
    let store = FencedDir::new(rig.dir.path().join("store"));
    let post = ArtifactName::new("drafts/post.md").expect("name");
    let editor = connect(&rig, "editor").await;
    let publisher = connect(&rig, "publisher").await;

    // The editor renews by hand, then goes quiet (a stuck tool call).
    let options = LeaseOptions {
        ttl: Duration::from_secs(1),
        auto_renew: false,
        ..LeaseOptions::default()
    };
    let stuck = editor
        .acquire_with("drafts/post.md", Exclusive, options)
        .await
        .expect("editor");
    store
        .write(&post, stuck.token(), b"draft v1")
        .expect("editor writes");
    stuck.renew().await.expect("a renewal within the ttl");

    let (published, refusals) = acquire_once_free(&publisher, "drafts/post.md").await;
    assert!(
        refusals.iter().all(|h| h == "editor"),
        "only the editor held it: {refusals:?}"
    );
    assert!(published.token() > stuck.token());
    store
        .write(&post, published.token(), b"published v1")
        .expect("the new holder writes");

    // The editor wakes up: its renewal says the lease is gone, and its late
    // write with the old token is refused by the store.
    match stuck.renew().await {
        Err(LeaseError::Lost { token, .. }) => assert_eq!(token, stuck.token()),
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(stuck.is_lost());
    match store.write(&post, stuck.token(), b"draft v2, late") {
        Err(FencedWriteError::Stale(e)) => assert_eq!(e.seen, published.token()),
        other => panic!("expected a stale-token refusal, got {other:?}"),
    }
    assert_eq!(store.read(&post).expect("read"), b"published v1");
    // A fresh store process sees the same tokens (they live beside the data).
    let reopened = FencedDir::new(rig.dir.path().join("store"));
    assert_eq!(
        reopened.last_token(&post).expect("tokens"),
        published.token()
    );
    assert!(reopened.write(&post, stuck.token(), b"again").is_err());

    published.release("published").await.expect("release");
    editor.close().await;
    publisher.close().await;
}

#[tokio::test]
async fn a_lease_handed_over_moves_with_a_new_token_and_a_dropped_one_is_released() {
    let rig = rig().await;
    let editor = connect(&rig, "editor").await;
    let publisher = connect(&rig, "publisher").await;
    let outsider = connect(&rig, "outsider").await;

    let edit = editor
        .acquire("drafts/post.md", Exclusive)
        .await
        .expect("editor");
    let first = edit.token();
    let token = edit
        .hand_over(publisher.id(), Duration::from_secs(15))
        .await
        .expect("hand over");
    assert!(token > first);
    assert_eq!(
        holder_of(outsider.acquire("drafts/post.md", Exclusive).await).1,
        "publisher"
    );
    assert!(matches!(
        editor.resume_lease("drafts/post.md", None).await,
        Err(LeaseError::NotHeld { .. })
    ));
    let taken = publisher
        .resume_lease("drafts/post.md", None)
        .await
        .expect("resume");
    assert_eq!(taken.token(), token);

    // Dropping a live handle releases it: the outsider gets it.
    drop(taken);
    publisher.close().await;
    let (got, _) = acquire_once_free(&outsider, "drafts/post.md").await;
    assert!(got.token() > token);
    got.release("done").await.expect("release");
    editor.close().await;
    outsider.close().await;
}

/// `baton lease acquire --json` as a shell-script agent would run it.
async fn cli_acquire(url: String, agent: String, name: &'static str) -> (i32, serde_json::Value) {
    let out = tokio::process::Command::new(baton_bin())
        .args([
            "--nats", &url, "lease", "acquire", name, "--agent", &agent, "--json",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run baton");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "baton lease acquire printed no JSON ({e}); exit {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

#[tokio::test]
async fn cli_and_sdk_acquirers_race_and_operators_see_and_revoke_the_one_holder() {
    let rig = rig().await;
    let url = rig.server.url();
    let sdk_agents = join_all((0..8).map(|i| {
        let url = url.clone();
        async move {
            Agent::connect(AgentOptions::new(format!("sdk{i}"), url))
                .await
                .expect("connect")
        }
    }))
    .await;
    let cli = join_all((0..8).map(|i| cli_acquire(url.clone(), format!("cli{i}"), "records/42")));
    let sdk = join_all(
        sdk_agents
            .iter()
            .map(|a| a.acquire("records/42", Exclusive)),
    );
    let (cli, sdk) = tokio::join!(cli, sdk);

    let mut winners: Vec<String> = cli
        .iter()
        .filter(|(code, _)| *code == 0)
        .map(|(_, j)| j["holder"].as_str().expect("holder").to_string())
        .collect();
    winners.extend(
        sdk.iter()
            .zip(&sdk_agents)
            .filter(|(r, _)| r.is_ok())
            .map(|(_, a)| a.id().to_string()),
    );
    assert_eq!(
        winners.len(),
        1,
        "one holder among CLI and SDK racers: {cli:?} {sdk:?}"
    );
    let winner = &winners[0];
    for (code, json) in &cli {
        if *code != 0 {
            assert_eq!(*code, 2, "a refusal exits 2: {json}");
            assert_eq!(json["held_by"].as_str(), Some(winner.as_str()), "{json}");
        }
    }
    for r in &sdk {
        if let Err(e) = r {
            assert!(
                matches!(e, LeaseError::Held { holder, .. } if holder.as_str() == winner),
                "{e}"
            );
        }
    }

    // The operator's view: the one holder, its token, not expired.
    let out = std::process::Command::new(baton_bin())
        .args(["--nats", &url, "leases", "--json"])
        .output()
        .expect("baton leases");
    let holds: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let holds = holds.as_array().expect("a list");
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0]["artifact"], "records/42");
    assert_eq!(holds[0]["holder"].as_str(), Some(winner.as_str()));
    assert_eq!(holds[0]["token"], 1);
    assert_eq!(holds[0]["expired"], false);
    // ... and the 15 it keeps waiting, CLI and SDK racers alike.
    let waiting = holds[0]["waiting"].as_array().expect("waiting");
    assert_eq!(waiting.len(), 15, "{waiting:?}");
    assert!(
        waiting
            .iter()
            .all(|w| w["agent"] != winner.as_str() && w["mode"] == "exclusive"),
        "{waiting:?}"
    );

    // Revoked by an operator: free for the next acquirer, with a higher token.
    let out = std::process::Command::new(baton_bin())
        .args([
            "--nats",
            &url,
            "lease",
            "revoke",
            "records/42",
            "--agent",
            "ops",
        ])
        .args(["--holder", winner, "--reason", "stuck"])
        .output()
        .expect("baton lease revoke");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, json) = cli_acquire(url.clone(), "next".into(), "records/42").await;
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["token"], 2);
    drop(sdk);
    for a in &sdk_agents {
        a.close().await;
    }
}

#[tokio::test]
async fn a_stuck_holder_is_reported_once_and_its_lease_is_seen_free_without_another_act() {
    let mut rig = rig().await;
    rig.start_detector("").await;
    let editor = connect(&rig, "editor").await;
    let options = LeaseOptions {
        ttl: Duration::from_secs(1),
        auto_renew: false,
        workflow: Some(baton_core::WorkflowId::new("blog").expect("id")),
        ..LeaseOptions::default()
    };
    let stuck = editor
        .acquire_with("drafts/post.md", Exclusive, options)
        .await
        .expect("editor");
    // Nothing else happens: the detector notices the lapse by itself.
    let (alert, _) = wait_alert(&rig.js, |a| a.kind == AlertKind::LeaseExpired).await;
    assert_eq!(alert.agents, vec![agent("editor")]);
    assert_eq!(alert.epoch, stuck.token());
    assert_eq!(alert.workflow, Some(workflow("blog")));
    assert!(alert.detail.contains("drafts/post.md"), "{}", alert.detail);
    assert!(alert.summary.contains("editor"), "{}", alert.summary);
    assert_eq!(alert.due_at.map(|t| t.unix_nanos() > 0), Some(true));

    // Its sweep is in the stream, so every reader sees the lease free.
    let blog = baton_core::WorkflowId::new("blog").expect("id");
    let book = editor.leases(Some(&blog)).await.expect("leases");
    assert_eq!(
        book.iter().count(),
        0,
        "the lapsed hold was swept: {book:?}"
    );
    // The stuck holder learns it at its next act.
    assert!(matches!(stuck.renew().await, Err(LeaseError::Lost { .. })));

    // One report per lapsed grant: after the next grant and its own lapse
    // there are two, never a repeat of the first.
    let next = editor
        .acquire_with(
            "drafts/post.md",
            Exclusive,
            LeaseOptions {
                ttl: Duration::from_secs(1),
                auto_renew: false,
                workflow: Some(blog.clone()),
                ..LeaseOptions::default()
            },
        )
        .await
        .expect("free again");
    assert!(next.token() > stuck.token());
    let token = next.token();
    next.detach();
    wait_alert(&rig.js, |a| {
        a.kind == AlertKind::LeaseExpired && a.epoch == token
    })
    .await;
    let reports: Vec<u64> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::LeaseExpired)
        .map(|a| a.epoch)
        .collect();
    assert_eq!(reports, vec![stuck.token(), token]);
    editor.close().await;
}

#[tokio::test]
async fn a_task_claimed_with_declared_artifacts_leases_them_all_or_none_and_its_end_frees_them() {
    let rig = rig().await;
    let planner = connect(&rig, "planner").await;
    let editor = connect(&rig, "editor").await;
    let publisher = connect(&rig, "publisher").await;
    let designer = connect(&rig, "designer").await;
    let blog = baton_core::WorkflowId::new("blog").expect("id");
    let create = |id: &str, files: &[&str]| {
        let mut t = NewTask::new(id, "blog").expect("ids");
        for f in files {
            t = t.artifact(f).expect("name");
        }
        t
    };
    planner
        .create_task(create("revise", &["drafts/post.md", "assets/logo.png"]))
        .await
        .expect("create");
    planner
        .create_task(create("publish", &["drafts/post.md"]))
        .await
        .expect("create");
    let holds = |book: &baton_core::lease::LeaseBook| -> Vec<(String, String)> {
        book.iter()
            .flat_map(|(a, hs)| {
                hs.iter()
                    .map(move |h| (a.name.to_string(), h.agent.to_string()))
            })
            .collect()
    };

    // A designer holds the whole drafts folder: the editor's claim takes
    // nothing, neither the task nor the logo it leased first (artifacts are
    // taken in name order, and given back on the first refusal).
    let drafts = designer
        .acquire_with(
            "drafts/",
            Exclusive,
            LeaseOptions {
                workflow: Some(blog.clone()),
                ..LeaseOptions::default()
            },
        )
        .await
        .expect("designer");
    let refused = editor.claim(&task("revise")).await;
    let Err(ClaimError::ArtifactHeld { source, .. }) = refused else {
        panic!("expected ArtifactHeld, got {refused:?}");
    };
    match *source {
        LeaseError::Held {
            holder,
            artifact,
            workflow,
            ..
        } => assert_eq!(
            (holder.as_str(), artifact.as_str(), workflow),
            ("designer", "drafts", Some(blog.clone()))
        ),
        other => panic!("expected Held, got {other:?}"),
    }
    assert_eq!(
        holds(&editor.leases(Some(&blog)).await.expect("leases")),
        vec![("drafts".to_string(), "designer".to_string())],
        "no partial leases"
    );
    assert_eq!(
        stored_task(&rig.js, "revise").await.and_then(|t| t.owner),
        None
    );

    // Freed: the claim takes the task and both files.
    drafts.release("done").await.expect("release");
    let revising = editor.claim(&task("revise")).await.expect("claim");
    let mut leased: Vec<String> = revising
        .leases()
        .iter()
        .map(|l| l.artifact().name.to_string())
        .collect();
    leased.sort();
    assert_eq!(leased, vec!["assets/logo.png", "drafts/post.md"]);
    // The publisher's task needs the draft the editor is revising.
    match publisher.claim(&task("publish")).await {
        Err(ClaimError::ArtifactHeld { source, .. }) => {
            assert!(
                matches!(&*source, LeaseError::Held { holder, .. } if holder.as_str() == "editor"),
                "{source}"
            );
        }
        other => panic!("expected ArtifactHeld, got {other:?}"),
    }
    assert_eq!(
        stored_task(&rig.js, "publish").await.and_then(|t| t.owner),
        None
    );

    // Completing the task frees its artifacts for the publisher.
    revising
        .complete("drafts/post.md", "revised")
        .await
        .expect("complete");
    assert!(holds(&editor.leases(Some(&blog)).await.expect("leases")).is_empty());
    let publishing = publisher.claim(&task("publish")).await.expect("claim");
    assert_eq!(publishing.leases().len(), 1);
    assert!(publishing.leases()[0].token() > 1);
    publishing
        .complete("https://blog", "published")
        .await
        .expect("complete");
    for a in [&planner, &editor, &publisher, &designer] {
        a.close().await;
    }
}

#[tokio::test]
async fn a_lapse_while_the_detector_is_killed_is_reported_once_after_its_restarts() {
    let mut rig = rig().await;
    rig.start_detector("").await;
    let editor = connect(&rig, "editor").await;
    let quick = || LeaseOptions {
        ttl: Duration::from_secs(1),
        auto_renew: false,
        ..LeaseOptions::default()
    };
    // kill -9 while the lease is still live; it lapses with no detector.
    let first = editor
        .acquire_with("records/7", Exclusive, quick())
        .await
        .expect("lease");
    rig.extra.pop().expect("the detector").kill9();
    let first_token = first.token();
    first.detach();
    // The lease state is the stream: a new detector finds the lapse.
    rig.start_detector("").await;
    wait_alert(&rig.js, |a| {
        a.kind == AlertKind::LeaseExpired && a.epoch == first_token
    })
    .await;
    // Killed and started again: it folds the same history, and the report
    // is not repeated. A later lapse, reported after the replay, shows the
    // replay is done.
    rig.extra.pop().expect("the detector").kill9();
    rig.start_detector("").await;
    let second = editor
        .acquire_with("records/7", Exclusive, quick())
        .await
        .expect("free again");
    let second_token = second.token();
    second.detach();
    wait_alert(&rig.js, |a| {
        a.kind == AlertKind::LeaseExpired && a.epoch == second_token
    })
    .await;
    let reports: Vec<u64> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::LeaseExpired)
        .map(|a| a.epoch)
        .collect();
    assert_eq!(reports, vec![first_token, second_token]);
    editor.close().await;
}

#[tokio::test]
async fn garbage_and_forgeries_on_a_root_change_nothing_and_block_nobody() {
    let rig = rig().await;
    let editor = connect(&rig, "editor").await;
    let held = editor
        .acquire("drafts/post.md", Exclusive)
        .await
        .expect("editor");
    // Bytes that are no lease event, and a real one whose subject names
    // another agent than its payload (a forgery): every reader skips both.
    publish_raw(
        &rig.js,
        "baton.art._.mallory.drafts.~",
        b"not protobuf".to_vec(),
        None,
    )
    .await;
    let forged = baton_core::lease::LeaseEvent {
        event_id: "forged-1".into(),
        agent: agent("editor"),
        artifact: held.artifact().clone(),
        token: held.token(),
        occurred_at: None,
        body: baton_core::lease::LeaseBody::Release {
            reason: "forged".into(),
        },
    };
    publish_raw(
        &rig.js,
        "baton.art._.mallory.drafts.post~2Emd.~",
        forged.encode(),
        None,
    )
    .await;
    // The editor still holds it, and the next acts on the root go through.
    let mallory = connect(&rig, "mallory").await;
    assert_eq!(
        holder_of(mallory.acquire("drafts/post.md", Exclusive).await).1,
        "editor"
    );
    held.renew().await.expect("the holder renews");
    let other = mallory
        .acquire("drafts/other.md", Exclusive)
        .await
        .expect("a sibling");
    other.release("done").await.expect("release");
    held.release("done").await.expect("release");
    editor.close().await;
    mallory.close().await;
}

#[tokio::test]
async fn refused_hand_overs_give_the_lease_back_and_long_reasons_are_cut() {
    let rig = rig().await;
    let editor = connect(&rig, "editor").await;
    let publisher = connect(&rig, "publisher").await;
    let folder = editor.acquire("h", Exclusive).await.expect("folder");
    let file = editor.acquire("h/x", Exclusive).await.expect("file in it");
    // To itself: refused, the handle comes back.
    let err = folder
        .hand_over(editor.id(), Duration::from_secs(5))
        .await
        .expect_err("self");
    let folder = err.into_lease().expect("the handle back");
    folder.renew().await.expect("still held");
    // The publisher cannot take the folder while the editor holds a file in
    // it: refused by the fold, the lease stays the editor's.
    let err = folder
        .hand_over(publisher.id(), Duration::from_secs(5))
        .await
        .expect_err("would break exclusivity");
    assert!(
        matches!(&err.error, LeaseError::Held { holder, .. } if holder.as_str() == "editor"),
        "{err}"
    );
    let folder = err.into_lease().expect("the handle back");
    folder.renew().await.expect("still held");
    // A reason over its limit is cut, not a reason to keep the lease.
    file.release(&"x".repeat(5000)).await.expect("released");
    let token = folder
        .hand_over(publisher.id(), Duration::from_secs(5))
        .await
        .expect("now it can go");
    assert_eq!(
        holder_of(editor.acquire("h/y", Exclusive).await),
        ("h".into(), "publisher".into())
    );
    let taken = publisher.resume_lease("h", None).await.expect("resume");
    assert_eq!(taken.token(), token);
    taken.release("done").await.expect("release");
    editor.close().await;
    publisher.close().await;
}

#[test]
fn a_folder_holder_fences_the_files_under_it_without_writing_data() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = FencedDir::new(dir.path());
    let post = ArtifactName::new("drafts/post.md").expect("name");
    store.write(&post, 3, b"v1").expect("holder of the file");
    // Someone now holds all of drafts (token 5) and says so to the store.
    store
        .fence(&ArtifactName::new("drafts").expect("name"), 5)
        .expect("fence");
    assert!(matches!(
        store.write(&post, 3, b"late"),
        Err(FencedWriteError::Stale(_))
    ));
    assert_eq!(store.read(&post).expect("read"), b"v1");
    // The store's own files are not artifacts.
    assert!(
        store
            .write(&ArtifactName::new(".baton-fence").expect("name"), 9, b"x")
            .is_err()
    );
}

/// `baton <args>` against the rig's server; panics unless it exits 0.
fn baton_ok(url: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(baton_bin())
        .arg("--nats")
        .arg(url)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run baton");
    assert!(
        out.status.success(),
        "baton {args:?}: exit {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn a_shell_script_agent_leases_its_tasks_artifacts_step_by_step() {
    let rig = rig().await;
    let url = rig.server.url();
    let leases = || -> Vec<serde_json::Value> {
        let out = baton_ok(&url, &["leases", "--json", "--workflow", "blog"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("json")
            .as_array()
            .expect("list")
            .clone()
    };
    let emit = |kind: &str, extra: &[&str]| {
        let mut args = vec!["emit", kind, "--task", "post", "--agent", "editor"];
        args.extend_from_slice(extra);
        baton_ok(&url, &args)
    };
    emit(
        "created",
        &["--workflow", "blog", "--artifact", "drafts/post.md"],
    );
    // Each step is its own process: the claim leases the draft and leaves
    // it held for the next step.
    emit("claimed", &[]);
    let held = leases();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["artifact"], "drafts/post.md");
    assert_eq!(held[0]["holder"], "editor");
    let renewed_at = held[0]["renewed_at"].as_str().expect("time").to_string();
    // A heartbeat step renews the task's leases too.
    emit("heartbeat", &["--note", "half way"]);
    let held = leases();
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held[0]["renewed_at"].as_str().expect("time") > renewed_at.as_str(),
        "renewed: {held:?}"
    );
    // Completing releases them.
    emit(
        "completed",
        &["--output", "drafts/post.md", "--summary", "done"],
    );
    assert!(leases().is_empty(), "released with the task");
}

#[tokio::test]
async fn a_holder_keeping_waiters_out_past_its_rule_and_a_stale_write_are_reported() {
    let mut rig = rig().await;
    // The limit is short so that the test needs no long wait; the report is
    // due once the hold is older than it and someone waits.
    rig.start_detector(
        "[[leases]]\nartifact = \"drafts/\"\nworkflow = \"blog\"\nmax_hold = \"1s\"\n",
    )
    .await;
    let blog = workflow("blog");
    let in_blog = || LeaseOptions {
        workflow: Some(blog.clone()),
        ttl: Duration::from_secs(60),
        ..LeaseOptions::default()
    };
    let editor = connect(&rig, "editor").await;
    let publisher = connect(&rig, "publisher").await;
    let store = connect(&rig, "store").await;
    let edit = editor
        .acquire_with("drafts/post.md", Exclusive, in_blog())
        .await
        .expect("editor");
    // A holder with nobody waiting is never reported, however long it holds.
    // The publisher asks for the whole folder and is refused: it waits.
    let refused = publisher.acquire_with("drafts", Exclusive, in_blog()).await;
    assert_eq!(holder_of(refused).1, "editor");
    // Refused again at once: the wait, recorded a moment ago, is not
    // written again (a polling agent does not write at its polling rate).
    holder_of(publisher.acquire_with("drafts", Exclusive, in_blog()).await);
    let waits = read_all(
        &rig.js,
        subjects::ARTIFACTS_STREAM,
        "baton.art.blog.publisher.>",
    )
    .await
    .len();
    assert_eq!(waits, 1, "one wait recorded");
    let (alert, _) = wait_alert(&rig.js, |a| a.kind == AlertKind::LeaseHeldTooLong).await;
    assert_eq!(alert.agents, vec![agent("editor"), agent("publisher")]);
    assert_eq!(alert.epoch, edit.token());
    assert_eq!(alert.workflow, Some(blog.clone()));
    assert!(
        alert
            .summary
            .contains("publisher (exclusive on blog:drafts"),
        "{}",
        alert.summary
    );

    // A store refuses a late write with the editor's old token once the
    // publisher holds the folder, and reports it.
    edit.release("done").await.expect("release");
    let folder = publisher
        .acquire_with("drafts", Exclusive, in_blog())
        .await
        .expect("publisher");
    let dir = tempfile::tempdir().expect("dir");
    let files = FencedDir::new(dir.path());
    let name = ArtifactName::new("drafts").expect("name");
    files.fence(&name, folder.token()).expect("fence");
    let late = files
        .write(
            &ArtifactName::new("drafts/post.md").expect("name"),
            1,
            b"late",
        )
        .unwrap_err();
    let FencedWriteError::Stale(stale) = late else {
        panic!("expected a stale token, got {late}");
    };
    store
        .report_stale_write(Some(&blog), Some(&agent("editor")), &stale)
        .await
        .expect("report");
    let (alert, _) = wait_alert(&rig.js, |a| a.kind == AlertKind::LeaseStaleWrite).await;
    assert_eq!(alert.agents, vec![agent("editor"), agent("store")]);
    assert_eq!(alert.epoch, 1);
    assert!(
        alert.summary.contains("publisher (token 2)"),
        "{}",
        alert.summary
    );

    // Once per grant: the held-too-long report is not repeated.
    let reports = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::LeaseHeldTooLong)
        .count();
    assert_eq!(reports, 1);
    // A waiter that gives up stops waiting.
    let researcher = connect(&rig, "researcher").await;
    holder_of(
        researcher
            .acquire_with("drafts/a.md", Shared, in_blog())
            .await,
    );
    researcher
        .stop_waiting("drafts/a.md", Some(&blog), Shared)
        .await
        .expect("stop waiting");
    let book = researcher.leases(Some(&blog)).await.expect("leases");
    assert_eq!(book.iter_waits().count(), 0, "{book:?}");
    drop(folder);
    for a in [editor, publisher, store, researcher] {
        a.close().await;
    }
}

/// The fold of the whole leases stream.
async fn fold_leases(rig: &Rig) -> LeaseBook {
    let mut folded = LeaseBook::new();
    for s in read_all(&rig.js, subjects::ARTIFACTS_STREAM, subjects::ARTIFACTS_ALL).await {
        if let Ok(event) = read_lease_event(&s.subject, &s.payload) {
            let meta = LeaseMeta {
                seq: s.seq,
                stored_at: s.stored_at,
            };
            apply(&mut folded, &event, meta, &[]);
        }
    }
    folded
}

/// Waits until the orchestrator's lease checkpoint covers the whole leases
/// stream, then returns KV `baton-leases` as a book and the stream's fold.
async fn materialised_and_folded(rig: &Rig) -> (LeaseBook, LeaseBook) {
    let stored = read_all(&rig.js, subjects::ARTIFACTS_STREAM, subjects::ARTIFACTS_ALL).await;
    let last = stored.last().map_or(0, |s| s.seq);
    wait_kv(
        &rig.js,
        subjects::CHECKPOINTS_BUCKET,
        subjects::LEASES_CHECKPOINT,
        |v| (baton_jetstream::read::parse_checkpoint(v)? >= last).then_some(()),
    )
    .await;
    let folded = fold_leases(rig).await;
    let mut materialised = LeaseBook::new();
    baton_jetstream::read::for_each_kv_value(&rig.js, subjects::LEASES_BUCKET, |_, v| {
        materialised.restore_root(&RootState::decode(&v.payload).expect("a stored root decodes"));
    })
    .await
    .expect("read baton-leases");
    (materialised, folded)
}

fn same_leases(a: &LeaseBook, b: &LeaseBook) -> bool {
    a.iter().eq(b.iter()) && a.iter_waits().eq(b.iter_waits())
}

#[tokio::test]
async fn the_orchestrator_materialises_leases_and_a_kill_9_loses_none() {
    let mut rig = rig().await;
    let editor = connect(&rig, "editor").await;
    let reader = connect(&rig, "reader").await;
    let publisher = connect(&rig, "publisher").await;
    let edit = editor
        .acquire("drafts/post.md", Exclusive)
        .await
        .expect("editor");
    let _notes = reader.acquire("notes", Shared).await.expect("reader");
    holder_of(publisher.acquire("drafts", Exclusive).await);
    let (materialised, folded) = materialised_and_folded(&rig).await;
    assert!(
        same_leases(&materialised, &folded),
        "KV {materialised:?} vs stream {folded:?}"
    );
    assert_eq!(materialised.iter().count(), 2);
    assert_eq!(materialised.iter_waits().count(), 1, "the publisher waits");

    // kill -9 of the orchestrator; acts go on meanwhile.
    rig.orchestrator.take().expect("orchestrator").kill9();
    let token = edit.token();
    edit.release("done").await.expect("release");
    let publishing = publisher
        .acquire("drafts", Exclusive)
        .await
        .expect("publisher");
    assert!(publishing.token() > token);
    // The operators' view is the stream's fold even while nobody
    // materialises it: KV roots plus the events after the checkpoint.
    let view = publisher.leases(None).await.expect("leases");
    let (_, folded_now) = {
        let mut folded = LeaseBook::new();
        for s in read_all(&rig.js, subjects::ARTIFACTS_STREAM, subjects::ARTIFACTS_ALL).await {
            if let Ok(event) = read_lease_event(&s.subject, &s.payload) {
                let meta = LeaseMeta {
                    seq: s.seq,
                    stored_at: s.stored_at,
                };
                apply(&mut folded, &event, meta, &[]);
            }
        }
        ((), folded)
    };
    assert!(
        same_leases(&view, &folded_now),
        "{view:?} vs {folded_now:?}"
    );

    // A new orchestrator resumes from its checkpoint: KV equals the fold.
    rig.start_orchestrator(&[]).await;
    let (materialised, folded) = materialised_and_folded(&rig).await;
    assert!(
        same_leases(&materialised, &folded),
        "KV {materialised:?} vs stream {folded:?}"
    );
    let drafts: Vec<_> = materialised
        .iter()
        .filter(|(a, _)| a.name.root() == "drafts")
        .collect();
    assert_eq!(drafts.len(), 1, "{drafts:?}");
    assert_eq!(drafts[0].1[0].agent.as_str(), "publisher");
    assert_eq!(
        materialised.iter_waits().count(),
        0,
        "the grant ended the wait"
    );
    drop(publishing);
    for a in [editor, reader, publisher] {
        a.close().await;
    }
}

/// Decision 9 for leases: a holder whose renewals the broker could not take
/// (the server frozen for longer than the ttl) loses the lease, as every
/// reader's fold says, and learns it at its next renewal; but it is not
/// paged for it. A holder that goes silent after the outage is.
#[tokio::test]
async fn a_lease_lapsed_in_a_broker_outage_is_not_blamed_on_its_holder() {
    let mut rig = rig().await;
    rig.start_detector("").await;
    let editor = connect(&rig, "editor").await;
    let lease = editor
        .acquire_with(
            "drafts/post.md",
            Exclusive,
            LeaseOptions {
                ttl: Duration::from_secs(2),
                ..LeaseOptions::default()
            },
        )
        .await
        .expect("editor");
    let pid = rig.server.pid().expect("server pid").to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    // Time passing is the point here: the lease's ttl runs out while the
    // broker takes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal("-CONT");
    tokio::time::timeout(PATIENCE, lease.lost())
        .await
        .expect("the holder learns the lease lapsed");
    let log = rig.dir.path().join("detector.log");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("the broker answers again")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the detector never saw the outage end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A holder silent after the outage is reported; its lapse is folded
    // after the editor's, so the editor's report, had there been one,
    // would have come first.
    let quiet = editor
        .acquire_with(
            "records/1",
            Exclusive,
            LeaseOptions {
                ttl: Duration::from_secs(1),
                auto_renew: false,
                ..LeaseOptions::default()
            },
        )
        .await
        .expect("records/1");
    quiet.detach();
    wait_alert(&rig.js, |a| {
        a.kind == AlertKind::LeaseExpired && a.detail.contains("records/1")
    })
    .await;
    let blamed: Vec<String> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind == AlertKind::LeaseExpired && a.detail.contains("drafts/post.md"))
        .map(|a| a.summary)
        .collect();
    assert!(
        blamed.is_empty(),
        "the outage was blamed on the editor: {blamed:?}"
    );
    editor.close().await;
}
