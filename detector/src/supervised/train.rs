//! Training: the seeded stratified train/test split, stratified k-fold cross-validation over a small grid of
//! hyper-parameters, the threshold chosen on out-of-fold probabilities, the final fit and its held-out
//! figures. Fits with linfa-ensemble's `RandomForest` and flattens its trees into [`Node`] lists whose values
//! are the training vectors' attack shares. Knows nothing of captures or label files.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_ensemble::EnsembleLearnerParams;
use linfa_trees::{DecisionTree, TreeNode};
use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::confusion::Confusion;
use super::model::{ClassCounts, ModelParts, Node, Params, SupervisedError, SupervisedModel, forest_p};
use crate::features::{FEATURES, FeatureVector, USED_FEATURES};

/// The hyper-parameters cross-validation chooses from (every combination).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Trees per forest.
    pub trees: Vec<usize>,
    /// Tree depth limits.
    pub max_depth: Vec<usize>,
    /// Feature shares.
    pub feature_fraction: Vec<f64>,
}

impl Default for Grid {
    /// 2 × 3 × 2 = 12 forests: scoring cost grows with trees × depth, so the grid stays where one batch scores
    /// in a few microseconds.
    fn default() -> Self {
        Self { trees: vec![25, 50], max_depth: vec![4, 8, 16], feature_fraction: vec![0.5, 1.0] }
    }
}

impl Grid {
    /// Every combination, fewest trees, shallowest and fewest features first (the order ties are broken in).
    pub fn combinations(&self) -> Vec<Params> {
        let mut out = Vec::new();
        for &trees in &self.trees {
            for &max_depth in &self.max_depth {
                for &feature_fraction in &self.feature_fraction {
                    out.push(Params { trees, max_depth, feature_fraction });
                }
            }
        }
        out
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Seed of the split, the folds and every forest.
    pub seed: u64,
    /// Share of each class held out for the test (when no test set is given).
    pub test_fraction: f64,
    /// Cross-validation folds (fewer when a class has fewer training vectors).
    pub folds: usize,
    /// Hyper-parameters to choose from.
    pub grid: Grid,
    /// Smallest batch (packets) the vectors come from; recorded in the model, which scores no smaller batch.
    pub min_packets: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { seed: 42, test_fraction: 0.3, folds: 5, grid: Grid::default(), min_packets: 8 }
    }
}

impl Settings {
    fn check(&self) -> Result<(), SupervisedError> {
        let bad = |what: String| Err(SupervisedError::Settings(what));
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return bad(format!("test fraction must be in (0, 1), got {}", self.test_fraction));
        }
        if !(2..=20).contains(&self.folds) {
            return bad(format!("folds must be in 2..=20, got {}", self.folds));
        }
        if self.min_packets == 0 {
            return bad("min packets must be >= 1".into());
        }
        let g = &self.grid;
        if g.trees.is_empty() || g.max_depth.is_empty() || g.feature_fraction.is_empty() {
            return bad("the hyper-parameter grid is empty".into());
        }
        if let Some(t) = g.trees.iter().find(|t| !(1..=1_000).contains(*t)) {
            return bad(format!("trees must be in 1..=1000, got {t}"));
        }
        if let Some(d) = g.max_depth.iter().find(|d| !(1..=32).contains(*d)) {
            return bad(format!("max depth must be in 1..=32, got {d}"));
        }
        if let Some(f) = g.feature_fraction.iter().find(|f| !(**f > 0.0 && **f <= 1.0)) {
            return bad(format!("feature fraction must be in (0, 1], got {f}"));
        }
        Ok(())
    }
}

/// Cross-validated figures of one grid point: out-of-fold predictions pooled over the folds, at P ≥ 0.5.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvResult {
    /// The hyper-parameters.
    pub params: Params,
    /// Pooled out-of-fold confusion matrix.
    pub confusion: Confusion,
}

/// What training produced and measured.
#[derive(Debug)]
pub struct Outcome {
    /// The model fitted on the training set with the chosen hyper-parameters (the one that was tested).
    pub model: SupervisedModel,
    /// Training vectors per class.
    pub train: ClassCounts,
    /// Test vectors per class.
    pub test: ClassCounts,
    /// Folds used.
    pub folds: usize,
    /// Every grid point's cross-validated figures, in grid order.
    pub cv: Vec<CvResult>,
    /// The chosen hyper-parameters (best cross-validated F1; ties go to the cheaper forest).
    pub chosen: Params,
    /// Held-out confusion matrix at the model's threshold.
    pub test_confusion: Confusion,
}

/// Indices of a seeded stratified split: each class is shuffled and `test_fraction` of it (rounded, at least
/// one and never all when the class has two or more) goes to the test set. Returns (train, test), sorted.
pub fn stratified_split(labels: &[bool], test_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        let n = idx.len();
        let k = if n >= 2 { ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1) } else { 0 };
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// The fold (0..k) of every index: each class is shuffled with the seed and dealt round-robin, continuing
/// from one class to the next, so every fold gets its share of both classes.
pub fn stratified_folds(labels: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let k = k.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0066_6f6c_6473);
    let mut fold = vec![0; labels.len()];
    let mut dealt = 0usize;
    for class in [true, false] {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        idx.shuffle(&mut rng);
        for i in idx {
            fold[i] = dealt % k;
            dealt += 1;
        }
    }
    fold
}

/// The threshold with the best F1 over `(P(attack), is_attack)` pairs: candidate thresholds are the distinct
/// probabilities, the highest of equally good ones wins (fewest alerts), and the result is the midpoint
/// between it and the next lower probability, so vectors a little less certain than the training ones are
/// still caught. Never below 0.01.
pub fn choose_threshold(scored: &[(f64, bool)]) -> f64 {
    let mut v: Vec<(f64, bool)> = scored.iter().copied().filter(|(p, _)| p.is_finite()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = v.iter().filter(|(_, a)| *a).count() as u64;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut best: Option<(f64, f64, Option<f64>)> = None;
    let mut i = 0;
    while i < v.len() {
        let p = v[i].0;
        while i < v.len() && v[i].0 == p {
            if v[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let f1 = Confusion { tp, fp, fn_: positives - tp, tn: 0 }.f1();
        if best.is_none_or(|(b, _, _)| f1 > b) {
            best = Some((f1, p, v.get(i).map(|x| x.0)));
        }
    }
    let threshold = match best {
        Some((_, p, Some(lower))) => (p + lower) / 2.0,
        Some((_, p, None)) => p,
        None => 0.5,
    };
    threshold.clamp(0.01, 1.0)
}

/// Flattens one linfa tree; `columns` maps the tree's feature indices to columns of the training matrix
/// (linfa-ensemble's per-tree feature draw), which map to batch-vector indices through [`USED_FEATURES`].
/// Leaves start with linfa's prediction (1 for attack, 0 for benign).
fn flatten(tree: &DecisionTree<f64, bool>, columns: &[usize]) -> Result<Vec<Node>, SupervisedError> {
    let blank = Node { feature: 0, split: 0.0, left: 0, right: 0, p: 0.0 };
    let mut nodes = vec![blank];
    let mut stack: Vec<(&TreeNode<f64, bool>, usize)> = vec![(tree.root_node(), 0)];
    while let Some((n, at)) = stack.pop() {
        let children = n.children();
        let child = |k: usize| children.get(k).and_then(|c| c.as_deref());
        match (n.is_leaf(), child(0), child(1)) {
            (false, Some(l), Some(r)) => {
                let (column, split, _) = n.split();
                let feature =
                    columns.get(column).and_then(|&c| USED_FEATURES.get(c)).copied().ok_or_else(|| {
                        SupervisedError::Data(format!("a tree splits on column {column} of {columns:?}"))
                    })?;
                let (li, ri) = (nodes.len(), nodes.len() + 1);
                nodes.push(blank);
                nodes.push(blank);
                let (left, right) = (u32::try_from(li), u32::try_from(ri));
                let (Ok(left), Ok(right)) = (left, right) else {
                    return Err(SupervisedError::Data("a tree has more than 2^32 nodes".into()));
                };
                nodes[at] = Node { feature, split, left, right, p: 0.5 };
                stack.push((r, ri));
                stack.push((l, li));
            }
            _ => nodes[at] = Node { p: if n.prediction() == Some(true) { 1.0 } else { 0.0 }, ..blank },
        }
    }
    Ok(nodes)
}

/// Replaces every node's value by the attack share of the `rows` that reach it (nodes no row reaches keep
/// theirs). A leaf of a forest is then a probability, not a vote.
fn calibrate(tree: &mut [Node], x: &[FeatureVector], y: &[bool], rows: &[usize]) {
    let mut counts = vec![(0u32, 0u32); tree.len()];
    for &r in rows {
        let mut i = 0usize;
        for _ in 0..tree.len() {
            let Some(n) = tree.get(i) else { break };
            counts[i].0 += u32::from(y[r]);
            counts[i].1 += 1;
            if n.left == 0 {
                break;
            }
            i = if x[r][n.feature] < n.split { n.left } else { n.right } as usize;
        }
    }
    for (n, (attack, total)) in tree.iter_mut().zip(counts) {
        if total > 0 {
            n.p = f64::from(attack) / f64::from(total);
        }
    }
}

/// Fits a forest on `rows` of (x, y) with linfa-ensemble, seeded, and returns its calibrated trees.
fn fit(
    x: &[FeatureVector],
    y: &[bool],
    rows: &[usize],
    params: &Params,
    seed: u64,
) -> Result<Vec<Vec<Node>>, SupervisedError> {
    let mut records = Array2::<f64>::zeros((rows.len(), USED_FEATURES.len()));
    for (mut record, &r) in records.rows_mut().into_iter().zip(rows) {
        for (cell, &f) in record.iter_mut().zip(&USED_FEATURES) {
            *cell = x[r][f];
        }
    }
    let targets: Array1<bool> = rows.iter().map(|&r| y[r]).collect();
    let data = DatasetBase::new(records, targets);
    let tree = DecisionTree::<f64, bool>::params().max_depth(Some(params.max_depth));
    let forest = EnsembleLearnerParams::new_fixed_rng(tree, ChaCha8Rng::seed_from_u64(seed))
        .ensemble_size(params.trees)
        .bootstrap_proportion(1.0)
        .feature_proportion(params.feature_fraction)
        .fit(&data)
        .map_err(|source| SupervisedError::Fit { params: *params, source })?;
    let mut trees = Vec::with_capacity(forest.models.len());
    for (t, columns) in forest.models.iter().zip(&forest.model_features) {
        let mut nodes = flatten(t, columns)?;
        calibrate(&mut nodes, x, y, rows);
        trees.push(nodes);
    }
    Ok(trees)
}

/// Runs `f` over `jobs` on every core (results in job order).
fn parallel<T: Sync, R: Send>(jobs: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len()).max(1);
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = f(job);
                    done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn check_data(x: &[FeatureVector], y: &[bool], what: &str) -> Result<(), SupervisedError> {
    if x.len() != y.len() {
        return Err(SupervisedError::Data(format!("{what}: {} vectors but {} labels", x.len(), y.len())));
    }
    if let Some(i) = x.iter().position(|v| v.iter().any(|f| !f.is_finite())) {
        return Err(SupervisedError::Data(format!("{what}: vector {i} has a value that is not a finite number")));
    }
    Ok(())
}

/// Trains and evaluates a model. The test set is `holdout` when given (e.g. other captures), else a seeded
/// stratified `settings.test_fraction` of (x, y). Cross-validation on the training set picks the
/// hyper-parameters (best pooled out-of-fold F1 at P ≥ 0.5) and then the threshold (best out-of-fold F1 of
/// the chosen forest, [`choose_threshold`]); the forest is refitted on the whole training set and scored once
/// on the test set.
pub fn train(
    x: &[FeatureVector],
    y: &[bool],
    holdout: Option<(&[FeatureVector], &[bool])>,
    settings: &Settings,
) -> Result<Outcome, SupervisedError> {
    settings.check()?;
    check_data(x, y, "training data")?;
    let pick = |rows: &[usize]| -> (Vec<FeatureVector>, Vec<bool>) {
        (rows.iter().map(|&i| x[i]).collect(), rows.iter().map(|&i| y[i]).collect())
    };
    let ((tx, ty), (hx, hy)) = match holdout {
        Some((hx, hy)) => {
            check_data(hx, hy, "test data")?;
            ((x.to_vec(), y.to_vec()), (hx.to_vec(), hy.to_vec()))
        }
        None => {
            let (train_rows, test_rows) = stratified_split(y, settings.test_fraction, settings.seed);
            (pick(&train_rows), pick(&test_rows))
        }
    };
    let train_counts = ClassCounts::of(ty.iter().copied());
    let folds = settings.folds.min(train_counts.attack).min(train_counts.benign);
    if folds < 2 {
        return Err(SupervisedError::Data(format!(
            "the training set has {} attack and {} benign vectors; cross-validation needs at least 2 of each \
             (label more attackers, add captures or lower the minimum batch size)",
            train_counts.attack, train_counts.benign
        )));
    }
    let fold_of = stratified_folds(&ty, folds, settings.seed);
    let grid = settings.grid.combinations();
    let jobs: Vec<(usize, usize)> = (0..grid.len()).flat_map(|g| (0..folds).map(move |f| (g, f))).collect();
    let results = parallel(&jobs, |&(g, f)| -> Result<Vec<(usize, f64)>, SupervisedError> {
        let (fit_rows, held): (Vec<usize>, Vec<usize>) = (0..ty.len()).partition(|&i| fold_of[i] != f);
        let trees = fit(&tx, &ty, &fit_rows, &grid[g], settings.seed)?;
        Ok(held.into_iter().map(|i| (i, forest_p(&trees, &tx[i]))).collect())
    });
    let mut oof = vec![vec![0.0; ty.len()]; grid.len()];
    for (&(g, _), r) in jobs.iter().zip(results) {
        for (i, p) in r? {
            oof[g][i] = p;
        }
    }
    let cv: Vec<CvResult> = grid
        .iter()
        .zip(&oof)
        .map(|(params, p)| CvResult {
            params: *params,
            confusion: Confusion::at_threshold(p.iter().copied().zip(ty.iter().copied()), 0.5),
        })
        .collect();
    let mut best = 0;
    for (g, r) in cv.iter().enumerate() {
        if r.confusion.f1() > cv[best].confusion.f1() {
            best = g;
        }
    }
    let chosen = grid[best];
    let scored: Vec<(f64, bool)> = oof[best].iter().copied().zip(ty.iter().copied()).collect();
    let threshold = choose_threshold(&scored);

    let all: Vec<usize> = (0..ty.len()).collect();
    let trees = fit(&tx, &ty, &all, &chosen, settings.seed)?;
    let mut benign_mean = vec![0.0; FEATURES];
    for (v, _) in tx.iter().zip(&ty).filter(|(_, a)| !**a) {
        for (m, f) in benign_mean.iter_mut().zip(v) {
            *m += f / train_counts.benign as f64;
        }
    }
    let mut model = SupervisedModel::new(ModelParts {
        threshold,
        min_packets: settings.min_packets,
        params: chosen,
        seed: settings.seed,
        trained_on: train_counts,
        benign_mean,
        trees,
    });
    let test_confusion =
        Confusion::at_threshold(hx.iter().map(|v| model.p_attack(v)).zip(hy.iter().copied()), threshold);
    model.set_test(test_confusion);
    Ok(Outcome {
        model,
        train: train_counts,
        test: ClassCounts::of(hy.iter().copied()),
        folds,
        cv,
        chosen,
        test_confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{FeatureScratch, batch_features};
    use crate::fixtures::{benign_batch, scan_batch, syn_flood};
    use linfa::traits::Predict;

    /// Benign browsing batches and attack batches (port scans and SYN floods) from the fixtures.
    fn data(benign: u64, attacks: u64, offset: u64) -> (Vec<FeatureVector>, Vec<bool>) {
        let mut s = FeatureScratch::default();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in offset..offset + benign * 3 {
            let b = benign_batch(i);
            if b.packets.len() >= 8 && (x.len() as u64) < benign {
                x.push(batch_features(&b.packets, &mut s));
                y.push(false);
            }
        }
        for i in offset..offset + attacks {
            let b = if i % 2 == 0 {
                scan_batch(i)
            } else {
                let host = std::net::IpAddr::from([10, 9, (i / 256) as u8, (i % 256) as u8]);
                let mut f = syn_flood(host, "10.0.0.80".parse().unwrap(), crate::fixtures::T0, 300, 1_000);
                f.swap_remove(0)
            };
            x.push(batch_features(&b.packets, &mut s));
            y.push(true);
        }
        (x, y)
    }

    fn quick() -> Settings {
        Settings {
            grid: Grid { trees: vec![5, 15], max_depth: vec![1, 6], feature_fraction: vec![1.0] },
            folds: 3,
            ..Settings::default()
        }
    }

    #[test]
    fn split_is_stratified_seeded_and_a_partition() {
        let labels: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect();
        let (train, test) = stratified_split(&labels, 0.3, 7);
        assert_eq!(train.len() + test.len(), 1000);
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>(), "every index exactly once");
        assert_eq!(test.iter().filter(|&&i| labels[i]).count(), 30, "30 % of the 100 attacks");
        assert_eq!(test.iter().filter(|&&i| !labels[i]).count(), 270, "30 % of the 900 benign");
        assert_eq!(stratified_split(&labels, 0.3, 7), (train.clone(), test.clone()), "same seed, same split");
        assert_ne!(stratified_split(&labels, 0.3, 8).1, test, "another seed, another split");
        // A class of two keeps one on each side; a class of one stays in training.
        let (tr, te) = stratified_split(&[true, true, false, false, false, false], 0.1, 1);
        assert_eq!((tr.len(), te.len()), (4, 2));
        let (tr, te) = stratified_split(&[true, false, false], 0.5, 1);
        assert!(tr.contains(&0) && !te.contains(&0));
    }

    #[test]
    fn folds_are_stratified() {
        let labels: Vec<bool> = (0..103).map(|i| i % 4 == 0).collect();
        let fold = stratified_folds(&labels, 5, 3);
        for f in 0..5 {
            let attack = (0..103).filter(|&i| fold[i] == f && labels[i]).count();
            let total = fold.iter().filter(|&&g| g == f).count();
            assert!((5..=6).contains(&attack), "fold {f}: {attack} of 26 attacks");
            assert!((20..=21).contains(&total), "fold {f}: {total} of 103");
        }
        assert_eq!(fold, stratified_folds(&labels, 5, 3));
    }

    #[test]
    fn threshold_maximises_f1_and_sits_between_the_classes() {
        // Attacks at 0.9 and 0.7, benign at 0.4 and below: any cut in (0.4, 0.7] is perfect; the midpoint wins.
        let s = [(0.9, true), (0.7, true), (0.4, false), (0.2, false), (0.1, false)];
        assert!((choose_threshold(&s) - 0.55).abs() < 1e-12);
        // One attack hides among benign vectors: catching it would cost three false alarms.
        let s = [(0.95, true), (0.9, true), (0.3, false), (0.3, false), (0.3, true), (0.3, false), (0.0, false)];
        assert!((choose_threshold(&s) - 0.6).abs() < 1e-12);
        assert_eq!(choose_threshold(&[]), 0.5);
        assert_eq!(choose_threshold(&[(0.0, true), (f64::NAN, false)]), 0.01);
    }

    #[test]
    fn flattened_trees_predict_like_linfa() {
        let (x, y) = data(300, 40, 0);
        let rows: Vec<usize> = (0..x.len()).collect();
        let mut records = Array2::<f64>::zeros((rows.len(), USED_FEATURES.len()));
        for (mut record, v) in records.rows_mut().into_iter().zip(&x) {
            for (cell, &f) in record.iter_mut().zip(&USED_FEATURES) {
                *cell = v[f];
            }
        }
        let data = DatasetBase::new(records, y.iter().copied().collect::<Array1<bool>>());
        let forest = EnsembleLearnerParams::new_fixed_rng(
            DecisionTree::<f64, bool>::params().max_depth(Some(3)),
            ChaCha8Rng::seed_from_u64(9),
        )
        .ensemble_size(7)
        .feature_proportion(0.5)
        .fit(&data)
        .unwrap();
        let (probe, _) = data_probe();
        for (tree, columns) in forest.models.iter().zip(&forest.model_features) {
            let flat = flatten(tree, columns).unwrap();
            let sub = probe.select(ndarray::Axis(1), columns);
            let theirs: Array1<bool> = tree.predict(&sub);
            for (row, want) in probe.rows().into_iter().zip(theirs) {
                let mut v = [0.0; FEATURES];
                for (c, &f) in USED_FEATURES.iter().enumerate() {
                    v[f] = row[c];
                }
                assert_eq!(super::super::model::tree_p(&flat, &v) == 1.0, want);
            }
        }
    }

    /// Unseen vectors (benign and attacks) as a matrix of the used features.
    fn data_probe() -> (Array2<f64>, Vec<bool>) {
        let (x, y) = data(200, 40, 50_000);
        let mut m = Array2::<f64>::zeros((x.len(), USED_FEATURES.len()));
        for (mut record, v) in m.rows_mut().into_iter().zip(&x) {
            for (cell, &f) in record.iter_mut().zip(&USED_FEATURES) {
                *cell = v[f];
            }
        }
        (m, y)
    }

    #[test]
    fn cross_validation_picks_the_depth_the_classes_need() {
        // Attack when syn_fraction lies in (0.4, 0.6), the other features noise: one split cannot cut out an
        // interval, so depth-1 stumps lose to depth-6 trees.
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x: Vec<FeatureVector> = (0..600)
            .map(|_| {
                let mut v = [0.0; FEATURES];
                v.iter_mut().for_each(|f| *f = rng.r#gen::<f64>());
                v
            })
            .collect();
        let y: Vec<bool> = x.iter().map(|v| v[5] > 0.4 && v[5] < 0.6).collect();
        let out = train(&x, &y, None, &quick()).unwrap();
        assert_eq!(out.cv.len(), 4);
        assert_eq!(out.folds, 3);
        let f1 = |depth: usize| out.cv.iter().filter(move |r| r.params.max_depth == depth).map(|r| r.confusion.f1());
        assert!(f1(1).fold(0.0, f64::max) < 0.5, "{:?}", out.cv);
        assert!(f1(6).all(|f| f > 0.85), "{:?}", out.cv);
        assert_eq!(out.chosen.max_depth, 6, "{:?}", out.cv);
        let best = out.cv.iter().map(|r| r.confusion.f1()).fold(0.0, f64::max);
        assert_eq!(out.cv.iter().find(|r| r.params == out.chosen).unwrap().confusion.f1(), best);
        assert!(out.test_confusion.f1() > 0.85, "{:?}", out.test_confusion);
    }

    #[test]
    fn the_model_separates_unseen_traffic_and_explains_a_scan() {
        let (x, y) = data(400, 60, 0);
        let out = train(&x, &y, None, &quick()).unwrap();
        assert_eq!((out.train.attack + out.test.attack, out.train.benign + out.test.benign), (60, 400));
        assert_eq!((out.test.attack, out.test.benign), (18, 120), "30 % of each class");
        assert!(out.test_confusion.f1() >= 0.95, "{:?}", out.test_confusion);
        assert_eq!(out.model.test(), Some(out.test_confusion));
        let (ux, uy) = data(300, 30, 90_000);
        let c = Confusion::at_threshold(ux.iter().map(|v| out.model.p_attack(v)).zip(uy), out.model.threshold());
        assert!(c.f1() >= 0.95 && c.fp <= 1, "{c:?}");
        let mut s = FeatureScratch::default();
        let scan = batch_features(&scan_batch(123_456).packets, &mut s);
        let why = out.model.explain(&scan, 3);
        assert!(!why.is_empty());
        assert!(why.iter().all(|d| d.contribution > 0.0 && d.feature != FEATURES - 1), "{why:?}");
    }

    #[test]
    fn same_seed_same_model() {
        let (x, y) = data(300, 40, 0);
        let a = train(&x, &y, None, &quick()).unwrap();
        let b = train(&x, &y, None, &quick()).unwrap();
        assert_eq!(a.model.version(), b.model.version());
        assert_eq!(a.cv, b.cv);
        let c = train(&x, &y, None, &Settings { seed: 5, ..quick() }).unwrap();
        assert_ne!(a.model.version(), c.model.version());
    }

    #[test]
    fn a_given_test_set_is_used_whole() {
        let (x, y) = data(200, 30, 0);
        let (hx, hy) = data(100, 10, 70_000);
        let out = train(&x, &y, Some((&hx, &hy)), &quick()).unwrap();
        assert_eq!((out.train.attack, out.train.benign), (30, 200));
        assert_eq!((out.test.attack, out.test.benign), (10, 100));
        assert_eq!(out.test_confusion.total(), 110);
    }

    #[test]
    fn hostile_training_input_is_an_error_not_a_panic() {
        let (mut x, mut y) = data(50, 10, 0);
        let too_few = train(&x[..52], &y[..52], None, &quick()).unwrap_err();
        assert!(too_few.to_string().contains("at least 2 of each"), "{too_few}");
        assert!(matches!(train(&[], &[], None, &quick()), Err(SupervisedError::Data(_))));
        assert!(matches!(train(&x, &y[1..], None, &quick()), Err(SupervisedError::Data(_))));
        let all_benign = vec![false; x.len()];
        assert!(matches!(train(&x, &all_benign, None, &quick()), Err(SupervisedError::Data(_))));
        for bad in [Settings { folds: 1, ..quick() }, Settings { test_fraction: 1.0, ..quick() }] {
            assert!(matches!(train(&x, &y, None, &bad), Err(SupervisedError::Settings(_))));
        }
        let bad_grid = Settings { grid: Grid { max_depth: vec![0], ..quick().grid }, ..quick() };
        assert!(matches!(train(&x, &y, None, &bad_grid), Err(SupervisedError::Settings(_))));
        x[3][2] = f64::NAN;
        assert!(matches!(train(&x, &y, None, &quick()), Err(SupervisedError::Data(_))));
        // Identical vectors with opposite labels, and extreme magnitudes, train without panicking.
        x[3][2] = 0.0;
        let dup = x[0];
        x.extend([dup; 6]);
        y.extend([true, false, true, false, true, false]);
        x.push([f64::MAX; FEATURES]);
        y.push(true);
        x.push([-f64::MAX; FEATURES]);
        y.push(false);
        let out = train(&x, &y, None, &quick()).unwrap();
        assert!((0.0..=1.0).contains(&out.model.p_attack(&[f64::MAX; FEATURES])));
    }
}
