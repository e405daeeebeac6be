//! Invariants of the source tree, checked like any other test (after
//! rust-analyzer's `tidy.rs`): every module says what it is for, every
//! folder is in ARCHITECTURE.md's code map, and the layers point one way.

use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The source roots of the workspace's crates.
const SOURCE_ROOTS: [&str; 5] = [
    "src",
    "actors/src",
    "gpu-node/src",
    "migrations/src",
    "push/src",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in SOURCE_ROOTS {
        rust_files(&root().join(dir), &mut files);
    }
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<String> = all_rust_files()
        .into_iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap()
                .trim_start()
                .starts_with("//!")
        })
        .map(|f| relative(&f))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` doc saying what they are for: {missing:#?}"
    );
}

#[test]
fn every_source_folder_is_in_the_code_map() {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for dir in SOURCE_ROOTS {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let name = format!("{}/", path.file_name().unwrap().to_string_lossy());
                if !map.contains(&format!("`{name}")) {
                    missing.push(relative(&path));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "folders ARCHITECTURE.md's code map does not describe: {missing:?}"
    );
}

/// `(file, line)` of every `crate::{module}` path in `files`.
fn uses_of(files: &[PathBuf], module: &str) -> Vec<String> {
    let needle = format!("crate::{module}");
    let mut found = Vec::new();
    for f in files {
        for (i, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains(&needle) {
                found.push(format!("{}:{}: {}", relative(f), i + 1, line.trim()));
            }
        }
    }
    found
}

/// Files of the control node's domain and data layers (everything but the
/// web tier, the CLI and the composition root).
fn domain_files() -> Vec<PathBuf> {
    let src = root().join("src");
    let mut files = Vec::new();
    for dir in ["accounts", "stats", "db", "payments", "control", "cluster"] {
        rust_files(&src.join(dir), &mut files);
    }
    for file in ["audience.rs", "community.rs", "limits.rs"] {
        files.push(src.join(file));
    }
    files
}

#[test]
fn the_domain_and_stats_never_reach_into_the_web_tier() {
    let files = domain_files();
    assert!(files.iter().all(|f| f.exists()), "{files:?}");
    let offending = uses_of(&files, "web");
    assert!(
        offending.is_empty(),
        "the web tier depends on the domain, not the other way round: {offending:#?}"
    );
}

#[test]
fn styles_are_named_through_the_vocabulary_not_the_network() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let offending: Vec<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .enumerate()
                .filter(|(_, l)| l.contains("neural_style::presets"))
                .map(|(i, l)| format!("{}:{}: {}", relative(f), i + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offending.is_empty(),
        "use dreamstream_actors::presets: {offending:#?}"
    );
}

/// The control node's top-level modules (`src/*.rs` and `src/*/`, without
/// the crate roots) and, for each, the others its code names as
/// `crate::name` (comments aside), with where.
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>
{
    let src = root().join("src");
    let mut modules = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.is_dir()
            || (path.extension().is_some_and(|e| e == "rs") && name != "main" && name != "lib")
        {
            modules.insert(name);
        }
    }
    let mut graph = std::collections::BTreeMap::new();
    for module in &modules {
        let mut files = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(src.join(format!("{module}.rs")));
        }
        let mut uses = std::collections::BTreeMap::new();
        for f in &files {
            let code: String = std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            // `crate::name` and `use crate::{a, b::c}`.
            let mut named = Vec::new();
            for (at, _) in code.match_indices("crate::") {
                let rest = &code[at + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    named.extend(group.split(',').filter_map(|item| {
                        let item = item.trim();
                        item.split("::").next().map(str::to_string)
                    }));
                } else {
                    let end = rest
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    named.push(rest[..end].to_string());
                }
            }
            for other in named {
                if modules.contains(&other) && &other != module {
                    uses.entry(other).or_insert_with(|| relative(f));
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

#[test]
fn no_import_cycle_crosses_a_top_level_module() {
    let graph = module_graph();
    assert!(graph.len() > 10 && graph.contains_key("web"), "{graph:?}");
    // Whom each module reaches, directly or not.
    let mut reach: std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>> = graph
        .iter()
        .map(|(m, uses)| (m.as_str(), uses.keys().map(String::as_str).collect()))
        .collect();
    loop {
        let mut grew = false;
        for module in graph.keys() {
            let through: Vec<&str> = reach[module.as_str()]
                .iter()
                .flat_map(|other| reach[other].iter().copied())
                .collect();
            let mine = reach.get_mut(module.as_str()).unwrap();
            for m in through {
                grew |= mine.insert(m);
            }
        }
        if !grew {
            break;
        }
    }
    let cycles: Vec<String> = graph
        .iter()
        .flat_map(|(from, uses)| {
            let reach = &reach;
            uses.iter()
                .filter(move |(to, _)| reach[to.as_str()].contains(from.as_str()))
                .map(move |(to, file)| format!("{from} -> {to} ({file}), and {to} leads back"))
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "modules of src/ that depend on each other (layers point one way): {cycles:#?}"
    );
}

#[test]
fn only_the_composition_root_and_the_front_ends_read_the_settings() {
    // Every other subsystem takes its own small config, built by
    // `Settings` (db::DbConfig, control::ControlConfig, …).
    let allowed = ["app", "cli", "web", "settings"];
    let offending: Vec<String> = module_graph()
        .into_iter()
        .filter(|(module, _)| !allowed.contains(&module.as_str()))
        .filter_map(|(module, uses)| uses.get("settings").map(|f| format!("{module}: {f}")))
        .collect();
    assert!(
        offending.is_empty(),
        "subsystems that read `Settings` instead of taking their config: {offending:#?}"
    );
}

/// Every package `root` depends on, directly or not, by `Cargo.lock`.
fn dependency_graph(root_package: &str) -> std::collections::BTreeSet<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    // name → its dependencies' names ("name" or "name version" entries).
    let mut deps: std::collections::HashMap<String, Vec<String>> = Default::default();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string())
            .unwrap();
        let list = block
            .split("dependencies = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap_or("");
        let names = list
            .split(',')
            .map(|d| d.trim().trim_matches('"'))
            .filter(|d| !d.is_empty())
            .map(|d| d.split(' ').next().unwrap().to_string());
        deps.entry(name).or_default().extend(names);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![root_package.to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(deps.get(&p).cloned().unwrap_or_default());
        }
    }
    seen
}

/// Issue 20.5: the push client builds for a Raspberry Pi without the
/// neural networks, the web framework or the database.
#[test]
fn the_push_crate_leaves_candle_actix_web_and_the_database_out() {
    let graph = dependency_graph("dreamstream-push");
    assert!(
        graph.contains("str0m") && graph.contains("awc"),
        "{graph:?}"
    );
    let heavy: Vec<&String> = graph
        .iter()
        .filter(|p| {
            p.starts_with("candle")
                || p.starts_with("sea-orm")
                || p.starts_with("sqlx")
                || ["actix-web", "gpu-node", "dreamstream", "migration"].contains(&p.as_str())
        })
        .collect();
    assert!(heavy.is_empty(), "dreamstream-push depends on {heavy:?}");
    // The check itself sees them where they are.
    let control = dependency_graph("dreamstream");
    assert!(control.contains("candle-core") && control.contains("actix-web"));
}
