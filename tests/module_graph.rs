//! Shape checks of `src/` (issue 21, STYLE.md): the module import graph has
//! no cycle, and no file is over 600 lines.
//!
//! The graph is read from the source text, without a Rust parser: every
//! path that starts with `crate::`, `super::`, `self::` or a child module
//! declared by `mod name;` (use trees with `{...}` included) is an edge from
//! the file's module to the longest module path it names. Comments, string
//! literals and `#[cfg(test)]` items are left out. A child file that only
//! extends its parent's type (`use super::{.., Leader}` and `impl Leader`,
//! like `states/leader/write.rs`) is one node with its parent. The binary
//! (`src/main.rs`) reaches the library through `election::` only and is
//! not part of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines a file in `src/` may have (STYLE.md).
const MAX_LINES: usize = 600;

#[test]
fn the_module_import_graph_of_src_has_no_cycle() {
    let cycles = cycles(&src());
    assert!(
        cycles.is_empty(),
        "import cycles in src/ (each edge with one place that makes it):\n{}",
        cycles.join("\n")
    );
}

#[test]
fn the_graph_of_src_has_the_edges_the_code_shows() {
    // Against a reader that finds nothing on the real tree: a use tree
    // (`use crate::k8s::{labeller, tasks::KubeTasks}`), a `super::` path,
    // a child module and a path in an expression.
    let edges = graph(&src());
    for (from, to) in [
        ("cmd::run", "k8s::labeller"),
        ("cmd::run", "k8s::tasks"),
        ("k8s::tasks", "k8s::events"),
        ("k8s::stale_labels", "k8s::events"),
        ("states::leader", "recipe"),
        ("config", "config::zk_security"),
        ("recipe::claim", "lease"),
    ] {
        assert!(
            edges.get(from).is_some_and(|t| t.contains_key(to)),
            "no edge {from} -> {to}; {from} has {:?}",
            edges.get(from).map(|t| t.keys().collect::<Vec<_>>())
        );
    }
}

#[test]
fn no_file_in_src_is_over_600_lines() {
    let mut long = Vec::new();
    for file in rust_files(&src()) {
        let n = std::fs::read_to_string(&file).unwrap().lines().count();
        if n > MAX_LINES {
            long.push(format!("{} ({n} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines: {}",
        long.join(", ")
    );
}

// The checker's own tests: a checker that never finds anything would pass
// the two tests above on any tree.

#[test]
fn a_planted_cycle_through_use_trees_and_super_is_found() {
    let dir = tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
        ("a.rs", "use crate::b::X;\npub fn g() {}\n"),
        ("b.rs", "use crate::{c::{self, Y as Z}};\npub struct X;\n"),
        ("c.rs", "pub struct Y;\npub fn f() { super::a::g() }\n"),
    ]);
    let found = cycles(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    for edge in ["a -> b", "b -> c", "c -> a"] {
        assert!(found[0].contains(edge), "{edge} missing in {found:?}");
    }
}

#[test]
fn comments_strings_and_test_code_make_no_edge() {
    let dir = tree(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        ("a.rs", "use crate::b::X;\n"),
        (
            "b.rs",
            "pub struct X;\n// crate::a::y\n/// [`crate::a`]\n/* crate::a::z /* nested */ crate::a */\n\
             const R: &str = r#\"crate::a::v\"#;\nconst Q: char = '\"';\n\
             const S: &str = \"crate::a::w\";\nfn l<'a>(x: &'a str) -> char { 'c' }\n\
             #[cfg(test)]\nmod tests {\n    use crate::a::*;\n}\n",
        ),
    ]);
    assert_eq!(cycles(dir.path()), Vec::<String>::new());
}

#[test]
fn a_child_that_only_extends_its_parents_type_is_one_node_with_it() {
    let extends = tree(&[
        ("lib.rs", "pub mod p;\n"),
        (
            "p.rs",
            "mod w;\nuse w::helper;\npub struct P<'a>(&'a str);\n",
        ),
        (
            "p/w.rs",
            "use super::P;\npub fn helper() {}\nimpl P<'_> {}\n",
        ),
    ]);
    assert_eq!(cycles(extends.path()), Vec::<String>::new());
    let uses = tree(&[
        ("lib.rs", "pub mod p;\n"),
        ("p/mod.rs", "mod w;\nuse w::helper;\npub struct P;\n"),
        (
            "p/w.rs",
            "use super::P;\npub fn helper(_: P) {}\nimpl Default for P {}\n",
        ),
    ]);
    let found = cycles(uses.path());
    assert!(
        found.len() == 1 && found[0].contains("p -> p::w") && found[0].contains("p::w -> p"),
        "{found:?}"
    );
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// One module file of the library.
struct Module {
    file: PathBuf,
    path: Vec<String>,
    /// Code without comments, strings and `#[cfg(test)]` items.
    code: String,
}

/// The module path of a file below `root` (`a/mod.rs` and `a.rs` are `a`).
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut path: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    path
}

/// The cycles of the graph below `root`, each as its edges with a place.
fn cycles(root: &Path) -> Vec<String> {
    let edges = graph(root);
    strongly_connected(&edges)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let mut lines = Vec::new();
            for from in &scc {
                for (to, place) in &edges[from] {
                    if scc.contains(to) {
                        lines.push(format!("  {from} -> {to} ({place})"));
                    }
                }
            }
            format!("cycle of {}:\n{}", scc.len(), lines.join("\n"))
        })
        .collect()
}

/// Edges between the modules below `root`: `edges[from][to]` is one place
/// that makes the edge.
fn graph(root: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let modules: Vec<Module> = rust_files(root)
        .into_iter()
        .filter(|f| f != &root.join("main.rs"))
        .map(|file| Module {
            path: module_path(root, &file),
            code: without_tests(&strip(&std::fs::read_to_string(&file).unwrap())),
            file,
        })
        .collect();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let node_of = merged_nodes(&modules);
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for m in &modules {
        let from = node_of(&m.path);
        edges.entry(from.clone()).or_default();
        for (line, target) in references(m) {
            let Some(to) = (1..=target.len())
                .rev()
                .map(|n| target[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            let to = node_of(&to);
            if to != from && !to.is_empty() {
                let place = format!("{}:{line}", m.file.strip_prefix(root).unwrap().display());
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(place);
            }
        }
    }
    edges
}

/// Node name of each module: a child file that `impl`s a type it imports
/// from `super` is merged into its parent.
fn merged_nodes(modules: &[Module]) -> impl Fn(&[String]) -> String + '_ {
    let mut merged: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for m in modules {
        if m.path.is_empty() {
            continue;
        }
        let from_super = super_names(&m.code);
        let extends = from_super.iter().any(|name| {
            let pattern = format!("impl {name}");
            m.code
                .match_indices(&pattern)
                .any(|(i, _)| inherent_impl_body(&m.code[i + pattern.len()..]))
        });
        if extends {
            merged.insert(m.path.clone(), m.path[..m.path.len() - 1].to_vec());
        }
    }
    move |path: &[String]| {
        let mut path = path.to_vec();
        while let Some(parent) = merged.get(&path) {
            path = parent.clone();
        }
        path.join("::")
    }
}

/// Whether the text after `impl Name` opens an inherent impl (`{`, or
/// generics and then `{`), not `impl Name for ..`.
fn inherent_impl_body(rest: &str) -> bool {
    let mut rest = rest.trim_start();
    if rest.starts_with('<') {
        let mut depth = 0;
        let end = rest.char_indices().find(|(_, c)| {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                _ => {}
            }
            depth == 0
        });
        let Some((end, _)) = end else { return false };
        rest = rest[end + 1..].trim_start();
    }
    rest.starts_with('{')
}

/// Names imported by `use super::Name;` or `use super::{A, B};`.
fn super_names(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in code.match_indices("use super::") {
        let rest = &code[i + "use super::".len()..];
        let end = rest.find(';').unwrap_or(rest.len());
        let tree = rest[..end]
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}');
        names.extend(
            tree.split(',')
                .map(|n| n.split_whitespace().next().unwrap_or("").to_owned())
                .filter(|n| !n.is_empty() && !n.contains("::")),
        );
    }
    names
}

/// (line, absolute module path named) of every path in the module's code.
fn references(m: &Module) -> Vec<(usize, Vec<String>)> {
    let code = m.code.as_bytes();
    let children: BTreeSet<String> = child_mods(&m.code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if !is_ident(code[i]) || (i > 0 && (is_ident(code[i - 1]) || code[i - 1] == b'$')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < code.len() && is_ident(code[i]) {
            i += 1;
        }
        let word = &m.code[start..i];
        let after_colons = start >= 2 && &code[start - 2..start] == b"::";
        let base: Option<Vec<String>> = match word {
            _ if after_colons => None,
            "crate" => Some(Vec::new()),
            "self" => Some(m.path.clone()),
            "super" => Some(m.path[..m.path.len().saturating_sub(1)].to_vec()),
            w if children.contains(w) => {
                let mut p = m.path.clone();
                p.push(w.to_owned());
                Some(p)
            }
            _ => None,
        };
        let Some(base) = base else { continue };
        if !m.code[i..].starts_with("::") {
            continue;
        }
        let line = m.code[..start].matches('\n').count() + 1;
        let mut j = i + 2;
        for path in use_tree(&m.code, &mut j, base) {
            out.push((line, path));
        }
        i = j;
    }
    out
}

/// Expands the use tree (or plain path) at `*i`, after `prefix::`.
fn use_tree(code: &str, i: &mut usize, prefix: Vec<String>) -> Vec<Vec<String>> {
    let b = code.as_bytes();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    skip_ws(i);
    if *i < b.len() && b[*i] == b'{' {
        *i += 1;
        let mut out = Vec::new();
        loop {
            skip_ws(i);
            if *i >= b.len() || b[*i] == b'}' {
                *i += 1;
                return out;
            }
            if b[*i] == b',' {
                *i += 1;
                continue;
            }
            let before = *i;
            out.extend(use_tree(code, i, prefix.clone()));
            if *i == before {
                *i += 1;
            }
        }
    }
    let start = *i;
    while *i < b.len() && is_ident(b[*i]) {
        *i += 1;
    }
    let seg = &code[start..*i];
    let mut path = prefix;
    match seg {
        "" | "self" => return vec![path],
        "super" => {
            path.pop();
        }
        _ => path.push(seg.to_owned()),
    }
    if code[*i..].starts_with("::") {
        *i += 2;
        return use_tree(code, i, path);
    }
    vec![path]
}

/// Modules declared by `mod name;` in the code.
fn child_mods(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("mod ") {
        if i > 0 && is_ident(code.as_bytes()[i - 1]) {
            continue;
        }
        let rest = &code[i + 4..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if rest[name.len()..].trim_start().starts_with(';') && !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The code with comments, string and char literals blanked (newlines kept).
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize, s: &str| {
        s.chars()
            .enumerate()
            .all(|(k, ch)| c.get(i + k) == Some(&ch))
    };
    // The index just past the first `end` at or after `j`.
    let past = |mut j: usize, end: &[char]| {
        while j < c.len() && !c[j..].starts_with(end) {
            j += if c[j] == '\\' && end == ['"'] { 2 } else { 1 };
        }
        (j + end.len()).min(c.len())
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let word_start = i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_');
        let hashes = c.iter().skip(i + 1).take_while(|ch| **ch == '#').count();
        let end = if at(i, "//") {
            past(i, &['\n'])
        } else if at(i, "/*") {
            let (mut depth, mut j) = (0, i);
            while j < c.len() {
                depth += i32::from(at(j, "/*")) - i32::from(at(j, "*/"));
                j += if at(j, "/*") || at(j, "*/") { 2 } else { 1 };
                if depth == 0 {
                    break;
                }
            }
            j
        } else if c[i] == 'r' && word_start && c.get(i + 1 + hashes) == Some(&'"') {
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            past(i + 2 + hashes, &close)
        } else if c[i] == '"' {
            past(i + 1, &['"'])
        } else if at(i, "'\\") {
            past(i + 2, &['\''])
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        };
        out.extend(
            c[i..end]
                .iter()
                .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
        );
        i = end;
    }
    out
}

/// The code with every `#[cfg(test)]` item blanked (newlines kept).
fn without_tests(code: &str) -> String {
    let mut out: Vec<u8> = code.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = code[from..].find("#[cfg(test)]") {
        let start = from + found;
        let b = code.as_bytes();
        let mut i = start;
        let mut depth = 0i32;
        // The item ends at its first `;` outside brackets, or at the `}`
        // closing its first `{`.
        while i < b.len() {
            match b[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    let mut braces = 0;
                    while i < b.len() {
                        match b[i] {
                            b'{' => braces += 1,
                            b'}' => {
                                braces -= 1;
                                if braces == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let end = (i + 1).min(b.len());
        for byte in &mut out[start..end] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        from = end;
    }
    String::from_utf8(out).unwrap()
}

/// Tarjan's strongly connected components.
fn strongly_connected(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let n = w.index.len();
        w.index.insert(v, n);
        w.low.insert(v, n);
        w.stack.push(v);
        w.on_stack.insert(v);
        let targets: Vec<&'a str> = w
            .edges
            .get(v)
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        for t in targets {
            if !w.index.contains_key(t) {
                visit(w, t);
                let low = w.low[v].min(w.low[t]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(t) {
                let low = w.low[v].min(w.index[t]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut scc = Vec::new();
            while let Some(x) = w.stack.pop() {
                w.on_stack.remove(x);
                scc.push(x.to_owned());
                if x == v {
                    break;
                }
            }
            scc.sort();
            w.out.push(scc);
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.out
}
