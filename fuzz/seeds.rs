//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/` (what `cargo fuzz run` reads).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (i, (target, input)) in netanom_fuzz::seeds().into_iter().enumerate() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{i:03}")), input)?;
    }
    println!("seeds written under {}", root.display());
    Ok(())
}
