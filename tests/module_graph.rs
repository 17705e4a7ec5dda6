//! No import cycle among the modules of any crate of the workspace.
//!
//! Reads every crate's `src/**/*.rs` (the library's module tree: `a/b.rs` and `a/b/mod.rs` are `a::b`; a
//! binary's `main.rs` and `bin/` are left out), builds the graph "module M uses module N" from the paths in
//! its source, and fails naming each cycle with the line that makes each of its edges. A path is one that
//! starts at `crate::`, `super::`, `self::` or a child module's name, in a `use` declaration (groups, globs and
//! `as` included) or anywhere in code; it counts for the module that defines the item it names, following
//! `pub use` re-exports, so `crate::Config` re-exported by `lib.rs` from `config` is an edge to `config`, not
//! to the crate root. Inline modules belong to their file's module. Declaring a module (`mod x;`) is not a use
//! of it. Unit-test modules (`#[cfg(test)] mod … { … }`) are left out: they drive the code under test from
//! outside its layering (a forest test builds an engine), which is no dependency of the product's modules.
//!
//! One test per crate, so one crate can be checked alone:
//! `cargo test --release -p netanom --test module_graph -- detector`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates checked, by folder ("." is the root crate); [`every_crate_of_the_workspace_is_checked`] keeps it
/// complete.
const CRATES: [&str; 7] = [".", "schemas", "handles", "producer", "detector", "alert-router", "fuzz"];

#[test]
fn netanom() {
    assert_no_cycle(".");
}

#[test]
fn schemas() {
    assert_no_cycle("schemas");
}

#[test]
fn handles() {
    assert_no_cycle("handles");
}

#[test]
fn producer() {
    assert_no_cycle("producer");
}

#[test]
fn detector() {
    assert_no_cycle("detector");
}

#[test]
fn alert_router() {
    assert_no_cycle("alert-router");
}

#[test]
fn fuzz() {
    assert_no_cycle("fuzz");
}

#[test]
fn every_crate_of_the_workspace_is_checked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found: BTreeSet<String> = BTreeSet::new();
    for entry in std::fs::read_dir(root).expect("workspace root") {
        let dir = entry.expect("entry").path();
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            found.insert(dir.file_name().expect("name").to_string_lossy().into_owned());
        }
    }
    found.insert(".".into());
    let listed: BTreeSet<String> = CRATES.iter().map(|c| c.to_string()).collect();
    assert_eq!(found, listed, "add a test for every crate folder of the workspace");
}

fn assert_no_cycle(krate: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(krate).join("src");
    let graph = Graph::of_tree(&src);
    assert!(!graph.modules.is_empty(), "{}: no modules found", src.display());
    let cycles = graph.cycles();
    assert!(cycles.is_empty(), "import cycles among the modules of {krate}/src:\n{}", cycles.join("\n"));
}

// ---------------------------------------------------------------------------------------------------------
// Lexing: identifiers and punctuation, with comments, strings, chars and lifetimes skipped.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Tokens of `text`, each with its 1-based line.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some(after) = raw_string_start(&c, i) {
            // r"…", r#"…"#, br#"…"#: ends at a quote followed by as many #.
            let hashes = after - i - 1 - usize::from(c[i] == 'b' || c[i] == 'c') - 1;
            i = after;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|k| c.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                line += usize::from(c[i] == '\n');
                i += 1;
            }
        } else if ch == '"' || ((ch == 'b' || ch == 'c') && next == Some('"')) {
            i += if ch == '"' { 1 } else { 2 };
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                line += usize::from(c.get(i) == Some(&'\n'));
                i += 1;
            }
            i += 1;
        } else if ch == '\'' || (ch == 'b' && next == Some('\'')) {
            let q = if ch == '\'' { i } else { i + 1 };
            if c.get(q + 1) == Some(&'\\') {
                // Skip the escaped character, which may be a quote.
                i = q + 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(q + 2) == Some(&'\'') {
                i = q + 3;
            } else {
                // A lifetime or label.
                i = q + 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ident_start(ch) {
            let start =
                if ch == 'r' && next == Some('#') && c.get(i + 2).is_some_and(|&x| ident_start(x)) { i + 2 } else { i };
            i = start;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            out.push((Tok::Ident(c[start..i].iter().collect()), line));
        } else if ch.is_ascii_digit() {
            while i < c.len() && (ident_char(c[i])) {
                i += 1;
            }
        } else if ch == ':' && next == Some(':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

/// When a raw string literal starts at `i`, the index just after its opening quote.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if c[j] == 'b' || c[j] == 'c' {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some(j + 1)
}

// ---------------------------------------------------------------------------------------------------------
// One file: the items it defines, its re-exports and the paths it uses.

/// A path as written, with the module it is written in and its line.
#[derive(Debug, Clone)]
struct Use {
    /// The module the path is relative to (inline modules included).
    scope: Vec<String>,
    segments: Vec<String>,
    line: usize,
}

#[derive(Debug, Default)]
struct Module {
    file: PathBuf,
    /// Names of the items defined at the top level.
    items: BTreeSet<String>,
    /// `pub use` at the top level: name → path (relative to this module, as written); `*` for globs.
    reexports: Vec<(String, Use)>,
    /// Every path that may name another module.
    uses: Vec<Use>,
}

const ITEM_KEYWORDS: [&str; 9] = ["struct", "enum", "fn", "const", "static", "type", "trait", "union", "mod"];

fn ident(t: Option<&(Tok, usize)>) -> Option<&str> {
    match t {
        Some((Tok::Ident(s), _)) => Some(s),
        _ => None,
    }
}

/// `toks` without the unit-test modules: `#[cfg(test)]`, then `mod NAME {` (optionally `pub`), up to its
/// matching `}`.
fn without_test_modules(toks: Vec<(Tok, usize)>) -> Vec<(Tok, usize)> {
    let is = |i: usize, want: &Tok| toks.get(i).is_some_and(|(t, _)| t == want);
    let word = |w: &str| Tok::Ident(w.to_string());
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let attribute = [Tok::Punct('#'), Tok::Punct('['), word("cfg"), Tok::Punct('('), word("test"), Tok::Punct(')')];
        if attribute.iter().enumerate().all(|(k, t)| is(i + k, t)) && is(i + 6, &Tok::Punct(']')) {
            let mut j = i + 7;
            if is(j, &word("pub")) {
                j += 1;
            }
            if is(j, &word("mod")) && matches!(toks.get(j + 1), Some((Tok::Ident(_), _))) && is(j + 2, &Tok::Punct('{'))
            {
                let mut depth = 0usize;
                let mut k = j + 2;
                while k < toks.len() {
                    match toks[k].0 {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                i = k + 1;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

fn parse_module(module: &[String], file: &Path, text: &str) -> Module {
    let toks = without_test_modules(lex(text));
    let mut m = Module { file: file.to_path_buf(), ..Module::default() };
    let mut depth = 0usize;
    // Inline modules open at a depth: (depth inside, name).
    let mut inline: Vec<(usize, String)> = Vec::new();
    let scope_of = |inline: &[(usize, String)]| {
        let mut s = module.to_vec();
        s.extend(inline.iter().map(|(_, n)| n.clone()));
        s
    };
    let mut i = 0;
    while i < toks.len() {
        let (tok, line) = (&toks[i].0, toks[i].1);
        match tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(word) if word == "use" => {
                let public = is_pub_before(&toks, i);
                let mut trees = Vec::new();
                let end = use_tree(&toks, i + 1, Vec::new(), &mut trees);
                let scope = scope_of(&inline);
                for (segments, alias) in trees {
                    let u = Use { scope: scope.clone(), segments, line };
                    if public && depth == 0 {
                        m.reexports.push((alias, u.clone()));
                    }
                    m.uses.push(u);
                }
                i = end;
                continue;
            }
            Tok::Ident(word) if ITEM_KEYWORDS.contains(&word.as_str()) => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    if depth == 0 && inline.is_empty() {
                        m.items.insert(name.to_string());
                    }
                    if word == "mod" && toks.get(i + 2).is_some_and(|t| t.0 == Tok::Punct('{')) {
                        inline.push((depth + 1, name.to_string()));
                    }
                }
            }
            Tok::Ident(word) if word == "macro_rules" => {
                if let Some(name) = ident(toks.get(i + 2)).filter(|_| depth == 0) {
                    m.items.insert(name.to_string());
                }
            }
            Tok::Ident(first) if toks.get(i + 1).is_some_and(|t| t.0 == Tok::Path) => {
                // A path in code: only its start matters; skip the rest of it.
                let preceded_by_path = i > 0 && toks[i - 1].0 == Tok::Path;
                if !preceded_by_path {
                    let mut segments = vec![first.clone()];
                    let mut j = i + 1;
                    while toks.get(j).is_some_and(|t| t.0 == Tok::Path) {
                        match ident(toks.get(j + 1)) {
                            Some(s) => segments.push(s.to_string()),
                            None => break,
                        }
                        j += 2;
                    }
                    m.uses.push(Use { scope: scope_of(&inline), segments, line });
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    m
}

/// Whether the `use` at `i` is preceded by `pub` or `pub(…)`.
fn is_pub_before(toks: &[(Tok, usize)], i: usize) -> bool {
    if i >= 1 && ident(toks.get(i - 1)) == Some("pub") {
        return true;
    }
    if i >= 1 && toks[i - 1].0 == Tok::Punct(')') {
        let mut j = i - 1;
        while j > 0 && toks[j].0 != Tok::Punct('(') {
            j -= 1;
        }
        return j >= 1 && ident(toks.get(j - 1)) == Some("pub");
    }
    false
}

/// Parses the use tree starting at `i` below `prefix`, pushing (path, name it binds); returns the index after
/// the tree (after the `;` at the top level).
fn use_tree(
    toks: &[(Tok, usize)],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    while i < toks.len() {
        match &toks[i].0 {
            Tok::Path => i += 1,
            Tok::Punct('{') => {
                i += 1;
                loop {
                    match toks.get(i).map(|t| &t.0) {
                        None => return i,
                        Some(Tok::Punct('}')) => return skip_semicolon(toks, i + 1),
                        Some(Tok::Punct(',')) => i += 1,
                        _ => i = use_tree(toks, i, prefix.clone(), out),
                    }
                }
            }
            Tok::Punct('*') => {
                prefix.push("*".into());
                out.push((prefix, "*".into()));
                return skip_semicolon(toks, i + 1);
            }
            Tok::Ident(s) => {
                if s == "self" && !prefix.is_empty() {
                    // `a::{self, …}`: the module `a` itself.
                } else {
                    prefix.push(s.clone());
                }
                i += 1;
                if toks.get(i).is_some_and(|t| t.0 == Tok::Path) {
                    continue;
                }
                let mut name = prefix.last().cloned().unwrap_or_default();
                if ident(toks.get(i)) == Some("as") {
                    name = ident(toks.get(i + 1)).unwrap_or_default().to_string();
                    i += 2;
                }
                out.push((prefix, name));
                return skip_semicolon(toks, i);
            }
            _ => return skip_semicolon(toks, i),
        }
    }
    i
}

fn skip_semicolon(toks: &[(Tok, usize)], i: usize) -> usize {
    if toks.get(i).is_some_and(|t| t.0 == Tok::Punct(';')) { i + 1 } else { i }
}

// ---------------------------------------------------------------------------------------------------------
// The graph of one crate.

struct Graph {
    /// Module path (`[]` = the crate root) → module.
    modules: BTreeMap<Vec<String>, Module>,
}

/// An edge and the place that makes it.
type Edges = BTreeMap<Vec<String>, BTreeMap<Vec<String>, (PathBuf, usize)>>;

impl Graph {
    /// The library module tree below `src`.
    fn of_tree(src: &Path) -> Graph {
        let mut files = Vec::new();
        collect_rs(src, &mut files);
        let mut modules = BTreeMap::new();
        for file in files {
            let rel = file.strip_prefix(src).expect("below src");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.first().is_some_and(|p| p == "bin") || parts == ["main.rs"] {
                continue;
            }
            let last = parts.pop().expect("file name");
            let stem = last.trim_end_matches(".rs").to_string();
            if !(parts.is_empty() && stem == "lib") && stem != "mod" {
                parts.push(stem);
            }
            let text = std::fs::read_to_string(&file).expect("readable source");
            modules.insert(parts.clone(), parse_module(&parts, &file, &text));
        }
        Graph { modules }
    }

    /// The absolute path a use names, or `None` when it starts outside the crate (std, another crate).
    fn absolute(&self, u: &Use) -> Option<Vec<String>> {
        let mut segs = u.segments.iter().peekable();
        let mut base: Vec<String> = match segs.peek().map(|s| s.as_str()) {
            Some("crate") => {
                segs.next();
                Vec::new()
            }
            Some("self") => {
                segs.next();
                u.scope.clone()
            }
            Some("super") => {
                let mut b = u.scope.clone();
                while segs.peek().is_some_and(|s| *s == "super") {
                    segs.next();
                    b.pop();
                }
                b
            }
            Some(first) => {
                let mut child = u.scope.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
                u.scope.clone()
            }
            None => return None,
        };
        base.extend(segs.cloned());
        Some(base)
    }

    /// The module defining what `path` (absolute) names, following re-exports.
    fn defining(&self, path: &[String], seen: &mut BTreeSet<Vec<String>>) -> Option<Vec<String>> {
        if !seen.insert(path.to_vec()) {
            return None;
        }
        let mut k = path.len();
        while k > 0 && !self.modules.contains_key(&path[..k]) {
            k -= 1;
        }
        let module_path = path[..k].to_vec();
        let module = self.modules.get(&module_path)?;
        let Some(name) = path.get(k) else { return Some(module_path) };
        if name == "*" || module.items.contains(name) {
            return Some(module_path);
        }
        for (alias, u) in &module.reexports {
            if alias == name || alias == "*" {
                let Some(mut target) = self.absolute(u) else { continue };
                if alias == "*" {
                    target.pop();
                    target.push(name.clone());
                }
                target.extend(path[k + 1..].iter().cloned());
                if let Some(found) = self.defining(&target, seen) {
                    return Some(found);
                }
            }
        }
        Some(module_path)
    }

    fn edges(&self) -> Edges {
        let mut edges: Edges = BTreeMap::new();
        for (from, m) in &self.modules {
            for u in &m.uses {
                let Some(path) = self.absolute(u) else { continue };
                let Some(to) = self.defining(&path, &mut BTreeSet::new()) else { continue };
                if &to != from {
                    edges.entry(from.clone()).or_default().entry(to).or_insert((m.file.clone(), u.line));
                }
            }
        }
        edges
    }

    /// Every cycle, one per strongly connected component, as `a -> b -> a` with the line of each edge.
    fn cycles(&self) -> Vec<String> {
        let edges = self.edges();
        let name = |p: &[String]| if p.is_empty() { "crate".to_string() } else { p.join("::") };
        let mut out = Vec::new();
        let mut reported: BTreeSet<Vec<String>> = BTreeSet::new();
        for start in self.modules.keys() {
            if reported.contains(start) {
                continue;
            }
            let Some(cycle) = shortest_cycle(&edges, start) else { continue };
            // Report each component once: mark every module that reaches `start` and is reached from it.
            for m in self.modules.keys() {
                if reaches(&edges, start, m) && reaches(&edges, m, start) {
                    reported.insert(m.clone());
                }
            }
            let mut text = cycle.iter().map(|m| name(m)).collect::<Vec<_>>().join(" -> ");
            for pair in cycle.windows(2) {
                let (file, line) = &edges[&pair[0]][&pair[1]];
                text.push_str(&format!("\n    {} -> {}: {}:{line}", name(&pair[0]), name(&pair[1]), file.display()));
            }
            out.push(text);
        }
        out
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The shortest path `start -> … -> start`, if any.
fn shortest_cycle(edges: &Edges, start: &[String]) -> Option<Vec<Vec<String>>> {
    let mut previous: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_vec()]);
    while let Some(at) = queue.pop_front() {
        for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
            if next.as_slice() == start {
                let mut path = vec![start.to_vec(), at.clone()];
                let mut cur = at.clone();
                while let Some(p) = previous.get(&cur) {
                    path.push(p.clone());
                    cur = p.clone();
                }
                if cur.as_slice() != start {
                    continue;
                }
                path.pop();
                path.reverse();
                path.insert(0, start.to_vec());
                return Some(path);
            }
            if !previous.contains_key(next) && next.as_slice() != start {
                previous.insert(next.clone(), at.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

fn reaches(edges: &Edges, from: &[String], to: &[String]) -> bool {
    let mut seen = BTreeSet::from([from.to_vec()]);
    let mut stack = vec![from.to_vec()];
    while let Some(at) = stack.pop() {
        for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
            if next.as_slice() == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------------------
// The checker itself.

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, text).expect("write");
    }
    dir
}

#[test]
fn a_cycle_through_a_use_group_and_a_path_in_code_is_found_with_its_lines() {
    let dir = tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::{b::{self, B}, c as _};\npub struct A;\n"),
        ("b.rs", "pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n"),
    ]);
    let cycles = Graph::of_tree(dir.path()).cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].starts_with("a -> b -> a"), "{}", cycles[0]);
    assert!(cycles[0].contains("a.rs:1") && cycles[0].contains("b.rs:2"), "{}", cycles[0]);
}

#[test]
fn super_child_paths_and_reexports_resolve_to_the_defining_module() {
    // `crate::Config` is `config::Config` re-exported by the root; `super::x` in `run/embedded.rs` is `run::x`,
    // and `embedded::E` in `run/mod.rs` is a child module's item: run -> embedded -> config, no cycle.
    let files = [
        ("lib.rs", "pub mod config;\npub mod run;\npub use config::Config;\n"),
        ("config.rs", "pub struct Config;\n// crate::run::x in a comment\nconst S: &str = \"crate::run::x\";\n"),
        ("run/mod.rs", "pub mod embedded;\npub fn x() { embedded::E::go() }\n"),
        ("run/embedded.rs", "use crate::Config;\npub struct E;\n#[cfg(test)]\nmod tests { use super::*; }\n"),
    ];
    let dir = tree(&files);
    let graph = Graph::of_tree(dir.path());
    assert!(graph.cycles().is_empty(), "{:?}", graph.cycles());
    let edges = graph.edges();
    let m = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    assert!(edges[&m("run")].contains_key(&m("run::embedded")));
    assert!(edges[&m("run::embedded")].contains_key(&m("config")));
    assert!(!edges.contains_key(&m("config")), "comments and strings are not uses");
    // Now `embedded` uses its parent's item: run <-> run::embedded.
    let dir = tree(&[files[0], files[1], files[2], ("run/embedded.rs", "pub struct E;\nfn y() { super::x() }\n")]);
    let cycles = Graph::of_tree(dir.path()).cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].contains("run -> run::embedded -> run") || cycles[0].contains("run::embedded -> run ->"));
}

#[test]
fn a_cycle_only_through_a_unit_test_module_is_not_one() {
    let files = [
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
        (
            "b.rs",
            "pub struct B;\n#[cfg(test)]\nmod tests {\n    use crate::a::A;\n    fn t() { let _ = A(super::B); }\n}\n",
        ),
    ];
    let dir = tree(&files);
    assert!(Graph::of_tree(dir.path()).cycles().is_empty());
    let dir = tree(&[files[0], files[1], ("b.rs", "pub struct B;\nfn f() -> Option<crate::a::A> { None }\n")]);
    assert_eq!(Graph::of_tree(dir.path()).cycles().len(), 1, "the same use outside a test module is a cycle");
}
