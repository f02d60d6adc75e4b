//! The dataplane's folders and the direction they may use each other in, checked from the sources so
//! an import cycle cannot come back unnoticed.
//!
//! Every `.rs` file under `src/` (but `main.rs`, the binary) belongs to a top-level module: the crate
//! root (`lib.rs`), a top-level file (`admin`, `config`, `shutdown`) or a folder (`agent`, `gateway`,
//! `api`, `policies`, `http`, `telemetry`). Its references to other modules are its `crate::…` paths
//! (also inside `use crate::{…}`) and its `super::…` paths that climb out of its folder; comments and
//! string literals do not count. The tests check that:
//! - no top-level module reaches itself through others (a cycle, named when found);
//! - each one uses only what [`ALLOWED`] lets it use;
//! - inside each folder the files have no cycle either (a folder's `mod.rs` declaring its files
//!   is not counted as using them, and `policies/mod.rs` is the registry of its files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Who may use whom, from the top down: each module may use only the modules listed with it, all of
/// which come after it here.
const ALLOWED: &[(&str, &[&str])] = &[
    ("lib", &["admin", "config", "shutdown", "agent", "gateway", "api", "policies", "http", "telemetry"]),
    ("admin", &["gateway", "api", "policies", "http", "telemetry"]),
    ("shutdown", &[]),
    // The link to the agent: it fills the gateway's route table and serves the policies' counters.
    ("agent", &["config", "gateway", "api", "policies", "http", "telemetry"]),
    ("config", &["http", "telemetry"]),
    // The request pipeline and its shared state.
    ("gateway", &["api", "policies", "http", "telemetry"]),
    // The compiled model of the deployed APIs.
    ("api", &["policies", "http", "telemetry"]),
    ("policies", &["http", "telemetry"]),
    ("http", &["telemetry"]),
    ("telemetry", &[]),
];

/// One source file: its module path (`["gateway", "route"]`; `["gateway"]` for `gateway/mod.rs`;
/// `[]` for `lib.rs`) and its code without comments and literals.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    let sources: Vec<Source> = files
        .into_iter()
        .filter(|path| path.strip_prefix(&root).is_ok_and(|p| p != Path::new("main.rs")))
        .map(|path| {
            let relative = path.strip_prefix(&root).expect("under src").with_extension("");
            let mut module: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|last| last == "mod" || last == "lib") {
                module.pop();
            }
            let code = strip(&std::fs::read_to_string(&path).expect("readable source"));
            Source { path, module, code }
        })
        .collect();
    assert!(sources.len() > 20, "expected the dataplane's sources under {}", root.display());
    sources
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code with comments, strings and character literals blanked out (lifetimes are kept).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident_char(out.chars().next_back()) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), or else a lifetime, which is kept.
            let end = if next == Some('\\') {
                (i + 3..chars.len()).find(|&j| chars[j] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The module paths a file refers to, each as far as it is written (`["api", "routes", "Api"]`).
/// `super::` is resolved from where it stands, inline `mod … {}` blocks included.
fn references(source: &Source) -> Vec<Vec<String>> {
    let code = &source.code;
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    // Inline module blocks open at each brace depth, to resolve `super::`.
    let mut depth = 0usize;
    let mut inline: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let before = code[..i].chars().next_back();
        let boundary = !ident_char(before) && before != Some(':');
        if bytes[i] == b'{' {
            depth += 1;
            i += 1;
        } else if bytes[i] == b'}' {
            depth = depth.saturating_sub(1);
            inline.retain(|(d, _)| *d <= depth);
            i += 1;
        } else if boundary && rest.starts_with("mod ") {
            let name: String = rest[4..].trim_start().chars().take_while(|c| ident_char(Some(*c))).collect();
            let after = rest[4..].trim_start()[name.len()..].trim_start();
            if after.starts_with('{') {
                inline.push((depth + 1, name));
            }
            i += 4;
        } else if boundary && rest.starts_with("crate::") {
            let (paths, used) = path_tree(&rest["crate::".len()..]);
            found.extend(paths);
            i += "crate::".len() + used;
        } else if boundary && rest.starts_with("super::") {
            let mut here: Vec<String> = source.module.clone();
            here.extend(inline.iter().map(|(_, name)| name.clone()));
            let mut tail = rest;
            while let Some(after) = tail.strip_prefix("super::") {
                here.pop();
                tail = after;
            }
            let (paths, used) = path_tree(tail);
            for path in paths {
                let mut full = here.clone();
                full.extend(path);
                found.push(full);
            }
            i += rest.len() - tail.len() + used;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    found
}

/// The paths of a use tree or path written after `crate::` (`a::{b, c::d}` gives `a::b` and
/// `a::c::d`), and how many bytes of `text` it took.
fn path_tree(text: &str) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = 0;
    loop {
        let name: String = text[i..].chars().take_while(|c| ident_char(Some(*c))).collect();
        if name.is_empty() {
            if text[i..].starts_with('{') {
                // A group: each member is a path of its own under the prefix.
                let mut paths = Vec::new();
                i += 1;
                loop {
                    let skipped = text[i..].len() - text[i..].trim_start_matches([' ', '\n', '\t', '\r', ',']).len();
                    i += skipped;
                    if text[i..].starts_with('}') || i >= text.len() {
                        return (paths, i + 1);
                    }
                    let (members, used) = path_tree(&text[i..]);
                    for member in members {
                        let mut path = prefix.clone();
                        path.extend(member);
                        paths.push(path);
                    }
                    i += used.max(1);
                }
            }
            return (vec![prefix], i);
        }
        i += name.len();
        prefix.push(name);
        match text[i..].strip_prefix("::") {
            Some(_) => i += 2,
            None => return (vec![prefix], i),
        }
    }
}

/// The top-level module a module path lies in (`lib` for the crate root itself).
fn top(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "lib".to_owned())
}

/// Edges between top-level modules, with one file and path that makes each.
fn module_graph(sources: &[Source]) -> BTreeMap<String, BTreeMap<String, String>> {
    let known: BTreeSet<String> = sources.iter().map(|s| top(&s.module)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for source in sources {
        let from = top(&source.module);
        graph.entry(from.clone()).or_default();
        for path in references(source) {
            // `crate::Item` names an item of the crate root; `crate::module::…` a module.
            let to = match path.first() {
                Some(first) if known.contains(first) => first.clone(),
                _ => "lib".to_owned(),
            };
            if to != from {
                let shown = format!("{}: crate::{}", source.path.display(), path.join("::"));
                graph.entry(from.clone()).or_default().entry(to).or_insert(shown);
            }
        }
    }
    graph
}

/// A cycle of `graph`, as the nodes along it (the first repeated at the end), if there is one.
fn find_cycle<V>(graph: &BTreeMap<String, BTreeMap<String, V>>) -> Option<Vec<String>> {
    fn visit<V>(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, V>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

fn describe(cycle: &[String], graph: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    cycle
        .windows(2)
        .map(|pair| format!("  {} -> {} ({})", pair[0], pair[1], graph[&pair[0]][&pair[1]]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_cycle_between_top_level_modules() {
    let graph = module_graph(&sources());
    // Shown with `--nocapture`: the module graph as it is.
    for (from, edges) in &graph {
        eprintln!("{from} -> {}", edges.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between top-level modules: {}\n{}", cycle.join(" -> "), describe(&cycle, &graph));
    }
}

#[test]
fn modules_use_only_what_the_table_allows() {
    let graph = module_graph(&sources());
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, edges) in &graph {
        let Some(may) = allowed.get(from.as_str()) else {
            wrong.push(format!("{from} is not in ALLOWED: place it in the table"));
            continue;
        };
        for (to, shown) in edges {
            if !may.contains(&to.as_str()) {
                wrong.push(format!("{from} may not use {to}: {shown}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_table_runs_one_way() {
    let order: Vec<&str> = ALLOWED.iter().map(|(name, _)| *name).collect();
    for (at, (name, may)) in ALLOWED.iter().enumerate() {
        for used in *may {
            let position = order.iter().position(|n| n == used);
            assert!(position.is_some_and(|p| p > at), "{name} may use {used}, which is not below it in ALLOWED");
        }
    }
}

#[test]
fn no_cycle_between_the_files_of_a_folder() {
    let sources = sources();
    let files: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for source in sources.iter().filter(|s| !s.module.is_empty()) {
        let from = source.module.join("/");
        graph.entry(from.clone()).or_default();
        for path in references(source) {
            // The longest module path the reference starts with is the file it uses.
            let Some(to) = (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| files.contains(p)) else {
                continue;
            };
            let same_folder = to.len() > 1 && to[0] == source.module[0] || to == source.module[..1];
            let declares = source.module.len() == 1 && to.len() == 2;
            if to == source.module || !same_folder || declares {
                continue;
            }
            let shown = format!("{}: {}", source.path.display(), path.join("::"));
            graph.entry(from.clone()).or_default().entry(to.join("/")).or_insert(shown);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between files: {}\n{}", cycle.join(" -> "), describe(&cycle, &graph));
    }
}

#[test]
fn the_scanner_sees_grouped_and_super_paths() {
    let source = Source {
        path: PathBuf::from("src/http/body.rs"),
        module: vec!["http".into(), "body".into()],
        code: strip(
            "use crate::{api::{routes::Api, cors}, telemetry};\n// crate::agent\nconst S: &str = \"crate::agent\";\n\
             fn f<'a>(c: char) -> bool { c == '{' }\nuse super::upstream::X;\n\
             mod tests { use super::super::super::Shared; }",
        ),
    };
    let found: Vec<String> = references(&source).iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["api::routes::Api", "api::cors", "telemetry", "http::upstream::X", "Shared"]);
}
