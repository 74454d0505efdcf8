//! Each program's reach is a fact of the crate graph, read from `cargo metadata`: the
//! root-started login programs (pop-popup, pop-checkpassword) do not depend on the store crate,
//! so they cannot name mailbox code even by mistake; the transaction side (pop-serve,
//! pop-dotlock, pop-deliver, pop-spool) does not depend on the login crate, so it cannot name
//! password code; the wire crate both sides share depends on neither; and only the login
//! crate links libcrypt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const STORE: &str = "spool-store";
const LOGIN: &str = "spool-login";
const WIRE: &str = "spool-wire";
const LOGIN_PROGRAMS: &[&str] = &["pop-popup", "pop-checkpassword", "pop-route"];
const TRANSACTION_PROGRAMS: &[&str] = &["pop-serve", "pop-dotlock", "pop-deliver", "pop-spool"];

/// The resolved package graph: each package's name, its `links` key, and the names of the
/// packages it depends on for building and running (normal and build edges; dev-only edges are
/// not part of what a program contains).
struct Graph {
    links: BTreeMap<String, Option<String>>,
    deps: BTreeMap<String, BTreeSet<String>>,
}

/// The host's target triple, as `rustc -vV` prints it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV prints host:")
        .trim()
        .to_string()
}

impl Graph {
    fn from_metadata() -> Graph {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The graph as built on this host: without --filter-platform, cargo metadata wants
        // every target's packages (Windows-only crates among them), which a fresh machine has
        // not downloaded, and --offline then fails.
        let out = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--offline",
                "--filter-platform",
                &host_triple(),
                "--manifest-path",
            ])
            .arg(root.join("Cargo.toml"))
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
        let mut names = BTreeMap::new();
        let mut links = BTreeMap::new();
        for p in meta["packages"].as_array().expect("packages") {
            let name = p["name"].as_str().expect("name").to_string();
            names.insert(p["id"].as_str().expect("id").to_string(), name.clone());
            links.insert(name, p["links"].as_str().map(str::to_string));
        }
        let mut deps = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
            let from = names[node["id"].as_str().expect("id")].clone();
            let mut to = BTreeSet::new();
            for d in node["deps"].as_array().expect("deps") {
                let shipped = d["dep_kinds"]
                    .as_array()
                    .expect("dep_kinds")
                    .iter()
                    .any(|k| k["kind"].is_null() || k["kind"] == "build");
                if shipped {
                    to.insert(names[d["pkg"].as_str().expect("pkg")].clone());
                }
            }
            deps.insert(from, to);
        }
        Graph { links, deps }
    }

    /// Every package `from` builds on, itself included.
    fn reach(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(p) = todo.pop() {
            if seen.insert(p.clone()) {
                todo.extend(self.deps.get(&p).into_iter().flatten().cloned());
            }
        }
        seen
    }
}

#[test]
fn login_programs_do_not_reach_the_store() {
    let g = Graph::from_metadata();
    for p in LOGIN_PROGRAMS {
        let r = g.reach(p);
        assert!(r.contains(LOGIN), "{p} should build on {LOGIN}: {r:?}");
        assert!(!r.contains(STORE), "{p} reaches {STORE}: {r:?}");
    }
}

#[test]
fn transaction_programs_do_not_reach_the_login_crate() {
    let g = Graph::from_metadata();
    for p in TRANSACTION_PROGRAMS {
        let r = g.reach(p);
        assert!(r.contains(STORE), "{p} should build on {STORE}: {r:?}");
        assert!(!r.contains(LOGIN), "{p} reaches {LOGIN}: {r:?}");
    }
}

#[test]
fn the_shared_wire_crate_knows_neither_side() {
    let g = Graph::from_metadata();
    let r = g.reach(WIRE);
    assert!(!r.contains(STORE) && !r.contains(LOGIN), "{r:?}");
}

#[test]
fn only_the_login_crate_links_libcrypt() {
    let g = Graph::from_metadata();
    let linking: Vec<_> = g
        .links
        .iter()
        .filter(|(_, l)| l.as_deref() == Some("crypt"))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(linking, [LOGIN]);
}

#[test]
fn the_reach_check_catches_a_violation() {
    let g = Graph {
        links: BTreeMap::new(),
        deps: BTreeMap::from([
            ("pop-popup".into(), BTreeSet::from([LOGIN.into()])),
            (LOGIN.into(), BTreeSet::from([WIRE.into(), STORE.into()])),
        ]),
    };
    assert!(g.reach("pop-popup").contains(STORE));
}
