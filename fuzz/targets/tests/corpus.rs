//! Every target once over its seed corpus (fuzz/corpus/<target>/): the quick check that runs
//! with the normal tests; the mutation runs are `spool-fuzz` (README, "Fuzzing").

use std::path::Path;

#[test]
fn every_target_passes_its_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for t in spool_fuzz_targets::TARGETS {
        let dir = root.join(t.name);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "{}: no seeds", dir.display());
        for p in entries {
            let data = std::fs::read(&p).unwrap();
            eprintln!("{}", p.display());
            (t.run)(&data);
        }
    }
    spool_fuzz_targets::remove_scratch();
}

#[test]
fn every_target_survives_degenerate_inputs() {
    for t in spool_fuzz_targets::TARGETS {
        for data in [
            &b""[..],
            b"\0",
            b"\xff",
            b"\x01\x00",
            b"\x0f\xff\xff",
            &[0xa5; 300],
        ] {
            (t.run)(data);
        }
    }
    spool_fuzz_targets::remove_scratch();
}
