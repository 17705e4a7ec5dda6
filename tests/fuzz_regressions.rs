//! The fuzz corpus as an ordinary test (stable Rust, no libFuzzer): every seed input and every input kept in
//! `fuzz/regressions/<target>/` (each one crashed or hung a target once) replayed through the targets' own
//! entry functions, which assert the decoders' invariants.

#[path = "../fuzz/src/schemas.rs"]
mod schemas;

#[path = "../fuzz/src/full.rs"]
mod entries;

use std::path::Path;

#[test]
fn kept_fuzz_findings_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("regressions");
    let mut replayed = 0;
    for target in entries::TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else { continue };
        for entry in dir {
            let path = entry.expect("a directory entry").path();
            let input = std::fs::read(&path).expect("a kept input");
            eprintln!("{target}: {}", path.display());
            entries::run(target, &input);
            replayed += 1;
        }
    }
    eprintln!("{replayed} kept inputs replayed");
}

#[test]
fn seeds_cover_every_target_and_pass() {
    let seeds = entries::seeds();
    for target in entries::TARGETS {
        assert!(seeds.iter().any(|(t, _)| *t == target), "no seed for {target}");
    }
    for (target, input) in &seeds {
        entries::run(target, input);
    }
}

/// Writes every seed into `fuzz/corpus/<target>/seed-NNN`, the corpus `cargo fuzz run` starts from:
/// `cargo test --release -p netanom --test fuzz_regressions -- --ignored write_seed_corpora`.
#[test]
#[ignore = "writes the fuzz corpora; run on demand before fuzzing"]
fn write_seed_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    for (i, (target, input)) in entries::seeds().into_iter().enumerate() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory can be created");
        std::fs::write(dir.join(format!("seed-{i:03}")), input).expect("a seed can be written");
    }
    eprintln!("seeds written under {}", root.display());
}
