//! `kill -9` of a node at random moments while events are published: every event the API
//! accepted is delivered afterwards (duplicates allowed, receivers de-duplicate by
//! `webhook-id`). Runs `payrelay bench webhook-crash`, which starts, kills and restarts its
//! own node; a few kills here, 20 in the long suite (`cargo nextest run --run-ignored
//! only -E 'test(twenty_kills)'`), 100 for BENCHMARKS.md.

use std::process::Command;

fn crash_run(kills: &str) -> serde_json::Value {
    // Port 0: the bench picks a free port, and another should the node find it taken.
    let output = Command::new(env!("CARGO_BIN_EXE_payrelay"))
        .args(["bench", "webhook-crash", "--kills", kills, "--rate", "100"])
        .args(["--port", "0"])
        .output()
        .expect("run payrelay bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["accepted"].as_u64().unwrap() > 0, "{report}");
    report
}

#[test]
fn nothing_accepted_is_lost_across_three_kills() {
    crash_run("3");
}

#[test]
#[ignore = "long suite: 20 kills take about a minute"]
fn twenty_kills() {
    crash_run("20");
}
