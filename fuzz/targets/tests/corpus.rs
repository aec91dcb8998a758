//! Every input saved under `fuzz/corpus/<target>/` (what the fuzzer found
//! worth keeping, minimised) runs through its target again: a change that
//! makes any of them panic fails here, on stable, in CI.

use std::path::PathBuf;

use switchyard_fuzz_targets::{run, TARGETS};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target)
}

#[test]
fn every_saved_input_runs_clean() {
    for target in TARGETS {
        let dir = corpus(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(
            inputs.len() >= 20,
            "{}: only {} inputs; the corpus is missing",
            dir.display(),
            inputs.len()
        );
        for path in &inputs {
            let data = std::fs::read(path).expect("read input");
            let outcome = std::panic::catch_unwind(|| run(target, &data));
            assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        }
        println!("{target}: {} inputs replayed", inputs.len());
    }
}
