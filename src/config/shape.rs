//! Deserialises the merged configuration tree and, when it does not fit the configuration's shape, finds every
//! problem rather than the first: each unknown key, value of the wrong type and malformed value (a duration, an
//! address, an enum name) is reported with its key path, then taken out of the tree and the tree tried again,
//! until what is left deserialises. Bounded: every round removes a node.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::sources::Step;

/// One problem: the key path in the tree as given (array indices as written) and the deserialiser's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub path: Vec<Step>,
    /// What.
    pub message: String,
}

/// `T` from `tree`, or every problem of its shape.
pub fn deserialize<T: DeserializeOwned>(tree: &toml::Table) -> Result<T, Vec<Problem>> {
    let mut work = tree.clone();
    let mut problems = Vec::new();
    // Elements removed from each array, by the array's path in `tree`, to give later problems their index as
    // written.
    let mut removed: BTreeMap<Vec<Step>, Vec<usize>> = BTreeMap::new();
    loop {
        match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(work.clone())) {
            Ok(value) if problems.is_empty() => return Ok(value),
            Ok(_) => return Err(problems),
            Err(e) => {
                let path = steps(e.path());
                let message = e.inner().message().to_string();
                let (original, removed_ok) = remove(&mut work, &path, &mut removed);
                problems.push(Problem { path: original, message });
                if !removed_ok {
                    return Err(problems);
                }
            }
        }
    }
}

fn steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    path.iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// Removes the deepest node of `path` that `tree` holds; returns `path` with the indices of the tree as first
/// given, and whether anything was removed.
fn remove(tree: &mut toml::Table, path: &[Step], removed: &mut BTreeMap<Vec<Step>, Vec<usize>>) -> (Vec<Step>, bool) {
    // How deep the tree goes along `path`, with indices translated to the tree as given.
    let mut original = Vec::new();
    let mut depth = 0;
    let mut node = Node::Table(tree);
    for step in path {
        let next = match (step, node) {
            (Step::Key(k), Node::Table(t)) => t.get(k),
            (Step::Index(i), Node::Value(toml::Value::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        original.push(match step {
            Step::Index(i) => Step::Index(shifted(*i, removed.get(&original))),
            key => key.clone(),
        });
        depth += 1;
        node = match next {
            toml::Value::Table(t) => Node::Table(t),
            v => Node::Value(v),
        };
    }
    // Steps below the deepest node the tree holds (an unknown table's keys, a missing field) are kept as given.
    original.extend(path[depth..].iter().cloned());
    if depth == 0 {
        return (original, false);
    }
    let done = match (parent(tree, &path[..depth - 1]), &path[depth - 1]) {
        (Some(Parent::Table(t)), Step::Key(k)) => t.remove(k).is_some(),
        (Some(Parent::Array(a)), Step::Index(i)) if *i < a.len() => {
            a.remove(*i);
            let Some(Step::Index(o)) = original.get(depth - 1) else { return (original, true) };
            let list = removed.entry(original[..depth - 1].to_vec()).or_default();
            list.push(*o);
            list.sort_unstable();
            true
        }
        _ => false,
    };
    (original, done)
}

/// Index `i` of an array from which the (sorted) original indices `gone` were removed, as first given.
fn shifted(i: usize, gone: Option<&Vec<usize>>) -> usize {
    let mut o = i;
    for r in gone.map_or(&[][..], Vec::as_slice) {
        if *r <= o {
            o += 1;
        }
    }
    o
}

enum Node<'a> {
    Table(&'a toml::Table),
    Value(&'a toml::Value),
}

enum Parent<'a> {
    Table(&'a mut toml::Table),
    Array(&'a mut Vec<toml::Value>),
}

/// The table or array at `path`.
fn parent<'a>(tree: &'a mut toml::Table, path: &[Step]) -> Option<Parent<'a>> {
    let mut at = Parent::Table(tree);
    for step in path {
        let value = match (step, at) {
            (Step::Key(k), Parent::Table(t)) => t.get_mut(k)?,
            (Step::Index(i), Parent::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
        at = match value {
            toml::Value::Table(t) => Parent::Table(t),
            toml::Value::Array(a) => Parent::Array(a),
            _ => return None,
        };
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sources::display;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Hook {
        url: String,
        #[serde(with = "humantime_serde")]
        timeout: std::time::Duration,
    }

    impl Default for Hook {
        fn default() -> Self {
            Self { url: String::new(), timeout: std::time::Duration::from_secs(1) }
        }
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Shape {
        count: u32,
        hooks: Vec<Hook>,
    }

    fn problems(text: &str) -> Vec<String> {
        let tree: toml::Table = text.parse().unwrap();
        deserialize::<Shape>(&tree)
            .unwrap_err()
            .into_iter()
            .map(|p| format!("{}: {}", display(&p.path), p.message))
            .collect()
    }

    #[test]
    fn every_problem_is_found_with_indices_as_written() {
        let p = problems(
            "count = \"x\"\nextra = 1\nhooks = [\"not a table\", { url = \"a\", timeout = \"soon\" }, 3, \
             { url = 4, wrong = 1 }]\n[more]\nx = 1\n",
        );
        let paths: Vec<&str> = p.iter().map(|l| l.split(':').next().unwrap()).collect();
        for want in
            ["count", "extra", "more", "hooks[0]", "hooks[1].timeout", "hooks[2]", "hooks[3].url", "hooks[3].wrong"]
        {
            assert!(paths.contains(&want), "{want} missing from {p:#?}");
        }
        assert_eq!(p.len(), 8, "{p:#?}");
    }

    #[test]
    fn a_good_tree_deserialises() {
        let tree: toml::Table = "count = 3\n[[hooks]]\nurl = \"a\"\ntimeout = \"2s\"\n".parse().unwrap();
        let s: Shape = deserialize(&tree).unwrap();
        assert_eq!((s.count, s.hooks.len()), (3, 1));
        assert_eq!((s.hooks[0].url.as_str(), s.hooks[0].timeout), ("a", std::time::Duration::from_secs(2)));
    }
}
