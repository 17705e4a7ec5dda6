//! Where each key of the merged configuration came from: a line of the file, an environment variable or the
//! command line. Problems found in the merged tree are reported with this origin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A key of a table.
    Key(String),
    /// An element of an array (of tables, in `[[x]]` form or inline).
    Index(usize),
}

/// A key path as printed in messages: `alert_router.webhooks[0].url`.
pub fn display(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The layers that set keys, in the order they were applied.
#[derive(Debug, Default)]
pub struct Sources {
    /// The file and the line (1-based) of every key path it sets.
    file: Option<(PathBuf, BTreeMap<Vec<Step>, usize>)>,
    /// Key paths set by environment variables or flags, with the variable's name or `command line`.
    overrides: Vec<(Vec<Step>, String)>,
}

impl Sources {
    /// Records the lines of the keys of `text`, the contents of `path`; keeps syntax errors out (they are
    /// reported on their own).
    pub fn file(&mut self, path: &Path, text: &str) {
        let (table, _) = DeTable::parse_recoverable(text);
        let mut lines = BTreeMap::new();
        walk_table(table.get_ref(), &mut Vec::new(), text, &mut lines);
        self.file = Some((path.to_owned(), lines));
    }

    /// Records that `origin` (an environment variable's name, or `command line`) set the key `path`.
    pub fn set(&mut self, path: &[String], origin: &str) {
        self.overrides.push((path.iter().cloned().map(Step::Key).collect(), origin.to_string()));
    }

    /// Where the value at `path` came from: the last override that set it or a table above it, else the
    /// file's line of the key (or of the nearest table above it that the file names); `None` when no layer
    /// names it (a built-in default).
    pub fn origin(&self, path: &[Step]) -> Option<String> {
        if let Some((_, origin)) = self.overrides.iter().rev().find(|(set, _)| path.starts_with(set)) {
            return Some(origin.clone());
        }
        let (file, _) = self.file.as_ref()?;
        self.line(path).map(|line| format!("{}:{line}", file.display()))
    }

    /// The file's line of the value at `path` (or of the nearest table above it that the file names), when the
    /// file is where the value came from.
    pub fn line(&self, path: &[Step]) -> Option<usize> {
        if self.overrides.iter().any(|(set, _)| path.starts_with(set)) {
            return None;
        }
        let (_, lines) = self.file.as_ref()?;
        (0..=path.len()).rev().find_map(|n| lines.get(&path[..n])).copied()
    }
}

/// 1-based line of the byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

fn walk_table(table: &DeTable<'_>, path: &mut Vec<Step>, text: &str, lines: &mut BTreeMap<Vec<Step>, usize>) {
    for (key, value) in table {
        path.push(Step::Key(key.get_ref().to_string()));
        lines.entry(path.clone()).or_insert_with(|| line_of(text, key.span().start));
        walk_value(value.get_ref(), path, text, lines);
        path.pop();
    }
}

fn walk_value(value: &DeValue<'_>, path: &mut Vec<Step>, text: &str, lines: &mut BTreeMap<Vec<Step>, usize>) {
    match value {
        DeValue::Table(t) => walk_table(t, path, text, lines),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                lines.insert(path.clone(), line_of(text, item.span().start));
                walk_value(item.get_ref(), path, text, lines);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Vec<Step> {
        path.split('.').map(|k| Step::Key(k.into())).collect()
    }

    #[test]
    fn keys_of_a_file_have_their_lines_and_overrides_win() {
        let text = "[detector.rate]\nthreshold_per_sec = 3\n\n[[alert_router.webhooks]]\nurl = \"x\"\n\
                    [[alert_router.webhooks]]\nurl = \"y\"\nmethod = \"PUT\"\n";
        let mut s = Sources::default();
        s.file(Path::new("my.toml"), text);
        assert_eq!(s.origin(&key("detector.rate.threshold_per_sec")).as_deref(), Some("my.toml:2"));
        assert_eq!(s.origin(&key("detector.rate.unknown")).as_deref(), Some("my.toml:1"), "nearest table");
        let mut hook = key("alert_router.webhooks");
        hook.extend([Step::Index(1), Step::Key("method".into())]);
        assert_eq!(display(&hook), "alert_router.webhooks[1].method");
        assert_eq!(s.origin(&hook).as_deref(), Some("my.toml:8"));
        assert_eq!(s.origin(&key("producer.snaplen")), None);
        s.set(&["detector".into(), "rate".into()], "NETANOM_DETECTOR__RATE");
        s.set(&["detector".into(), "rate".into(), "cooldown".into()], "command line");
        assert_eq!(s.origin(&key("detector.rate.threshold_per_sec")).as_deref(), Some("NETANOM_DETECTOR__RATE"));
        assert_eq!(s.origin(&key("detector.rate.cooldown")).as_deref(), Some("command line"));
    }
}
