//! `nodetool.test.*` (Crash, Allocate, Panic, …) never reach a production binary: they are
//! registered only with the `test-nodes` feature, and no crate of the workspace enables that
//! feature except in its dev-dependencies (which cargo applies only to test, bench and
//! example builds). Checked on the real manifests through `cargo metadata`.

#![allow(clippy::unwrap_used)]

use serde_json::Value;

#[test]
fn only_dev_dependencies_enable_the_test_nodes_feature() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    assert!(packages.len() > 5, "the whole workspace is listed");
    let mut dev_users = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            if d["name"] != "nodetool-nodes" {
                continue;
            }
            let enables = d["features"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "test-nodes");
            let dev = d["kind"] == "dev";
            assert!(
                !enables || dev,
                "{name} enables nodetool-nodes/test-nodes in a {} dependency",
                d["kind"].as_str().unwrap_or("normal")
            );
            if enables {
                dev_users.push(name.to_owned());
            }
        }
        // No feature of any package turns it on either.
        for (feature, enables) in p["features"].as_object().unwrap() {
            if name == "nodetool-nodes" && feature == "test-nodes" {
                continue;
            }
            for e in enables.as_array().unwrap() {
                let e = e.as_str().unwrap();
                assert!(
                    !e.ends_with("test-nodes"),
                    "feature {feature} of {name} enables {e}"
                );
            }
        }
    }
    // The crates whose tests run the test nodes do enable them (else their tests could not).
    for needed in ["nodetool-exec", "nodetool-cli", "nodetool-server"] {
        assert!(
            dev_users.iter().any(|u| u == needed),
            "{needed}: {dev_users:?}"
        );
    }
}

/// `registry()` registers the test nodes exactly when the feature is on (this crate's tests
/// turn it on through their dev-dependency on the crate itself; the manifests above make
/// sure nothing else does).
#[test]
fn the_registry_follows_the_feature() {
    let registry = nodetool_nodes::registry();
    let test_types: Vec<&str> = registry
        .types()
        .filter(|t| t.starts_with("nodetool.test."))
        .collect();
    assert_eq!(nodetool_nodes::TEST_NODES, cfg!(feature = "test-nodes"));
    if nodetool_nodes::TEST_NODES {
        assert!(
            test_types.contains(&"nodetool.test.Crash"),
            "{test_types:?}"
        );
    } else {
        assert!(test_types.is_empty(), "{test_types:?}");
    }
}
