//! The Rust SDK's examples (crates/baton-agent/examples) run against a real
//! server and the real orchestrator, and the README's Rust snippets are the
//! examples' own code.

mod support;

use std::{path::PathBuf, process::Command};

use support::*;

/// `target/<profile>/examples/<name>`, built by `cargo test`/`nextest` for
/// the workspace (they build every package's examples).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example {name} not built at {}: run the workspace's tests (`scripts/test`) or `cargo build -p baton-agent --examples`",
        path.display()
    );
    path
}

async fn run(rig: &Rig, name: &str) -> String {
    let out = Command::new(example(name))
        .env("BATON_NATS_URL", rig.server.url())
        .output()
        .expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "example {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_examples_run_against_real_services() {
    let mut rig = Rig::new().await;
    rig.start_orchestrator(&[]).await;
    for _ in 0..2 {
        // Twice: an example can be run again without tripping over itself.
        let out = run(&rig, "handoff").await;
        assert!(out.contains("completed by editor"), "{out}");
    }
    let out = run(&rig, "claim_race").await;
    assert_eq!(out.matches(" lost: ").count(), 7, "{out}");
    assert!(out.contains("won the claim"), "{out}");
    let out = run(&rig, "decisions").await;
    assert!(out.contains("bob must read again"), "{out}");
    for _ in 0..2 {
        let out = run(&rig, "leases").await;
        assert!(out.contains("publisher waits: editor holds"), "{out}");
        assert!(out.contains("late write refused: true"), "{out}");
    }
    // What the examples did is what the orchestrator materialised: no
    // protocol report was raised by any of them.
    rig.wait_caught_up().await;
    let reports: Vec<_> = all_alerts(&rig.js)
        .await
        .into_iter()
        .filter(|a| a.kind.is_report())
        .collect();
    assert!(reports.is_empty(), "{reports:?}");
}

/// The code between `// README: <name>` and `// README: end` in an example.
fn snippet(file: &str, name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../baton-agent/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example source");
    let start = format!("// README: {name}");
    text.lines()
        .skip_while(|l| l.trim() != start)
        .skip(1)
        .take_while(|l| l.trim() != "// README: end")
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_shows_the_examples_own_code() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README");
    for (file, name) in [
        ("handoff.rs", "handoff"),
        ("claim_race.rs", "claim race"),
        ("leases.rs", "leases"),
    ] {
        let code = snippet(file, name);
        assert!(!code.is_empty(), "no README snippet in {file}");
        assert!(
            readme.contains(&code),
            "README.md must show the code of examples/{file} ({name}) exactly:\n{code}"
        );
    }
}
