//! Runs every recorded NodeTool conformance case and compares the result exactly, and the
//! per-node / per-edge event sequences (global order varies between runs in the original).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use nodetool_engine::{parse_workflow, RunOptions, Status};
use serde_json::Value;

#[tokio::test]
async fn every_conformance_case_matches_the_recording() {
    let dir = conformance_dir();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("workflow.json").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", dir.display());
    let engine = engine().await;
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let wf = parse_workflow(&std::fs::read_to_string(case.join("workflow.json")).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("outputs.json")).unwrap())
                .unwrap();
        let recorded: Vec<Value> = std::fs::read_to_string(case.join("events.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();

        let (outcome, events) = run(
            &engine,
            wf.graph.clone(),
            Value::Null,
            RunOptions::default(),
        )
        .await;
        let want_status = expected["status"].as_str().unwrap();
        if outcome.status.as_str() != want_status {
            failures.push(format!(
                "{name}: status {} != {want_status} ({:?})",
                outcome.status, outcome.error
            ));
            continue;
        }
        if Value::Object(outcome.result.clone()) != expected["result"] {
            failures.push(format!(
                "{name}: result\n  got  {}\n  want {}",
                Value::Object(outcome.result.clone()),
                expected["result"]
            ));
        }

        // Every event is well-formed: job id, seq 1..=n in order, terminal job_update last.
        let ours = to_values(&events);
        for (i, e) in ours.iter().enumerate() {
            assert_eq!(e["job_id"], Value::String(outcome.job_id.clone()), "{name}");
            assert_eq!(e["seq"], Value::from(i as u64 + 1), "{name}");
        }
        assert_eq!(ours.last().unwrap()["type"], "job_update", "{name}");
        assert_eq!(outcome.status, Status::Completed);

        let want_nodes = per_node_sequences(&recorded);
        let got_nodes = per_node_sequences(&ours);
        for (node, seq) in &want_nodes {
            if got_nodes.get(node) != Some(seq) {
                failures.push(format!(
                    "{name}: node {node} events {:?} != recorded {seq:?}",
                    got_nodes.get(node)
                ));
            }
        }
        // Nodes the original reports nothing for are its input nodes (dispatched, not run).
        for node in got_nodes.keys().filter(|n| !want_nodes.contains_key(*n)) {
            let t = &wf.graph.node(node).unwrap().node_type;
            if !t.starts_with("nodetool.input.") {
                failures.push(format!("{name}: unexpected events for node {node} ({t})"));
            }
        }
        let want_edges: BTreeMap<_, _> = per_edge_counters(&recorded);
        let got_edges = per_edge_counters(&ours);
        if want_edges != got_edges {
            failures.push(format!(
                "{name}: edge counters {got_edges:?} != recorded {want_edges:?}"
            ));
        }
        // Output updates: same values per output, in order.
        let outputs = |evs: &[Value]| -> BTreeMap<String, Vec<Value>> {
            let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for e in evs.iter().filter(|e| e["type"] == "output_update") {
                m.entry(e["output_name"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(serde_json::json!([e["value"], e["output_type"]]));
            }
            m
        };
        if outputs(&recorded) != outputs(&ours) {
            failures.push(format!("{name}: output_update values/types differ"));
        }
    }
    assert!(
        failures.is_empty(),
        "conformance failures:\n{}",
        failures.join("\n")
    );
}
