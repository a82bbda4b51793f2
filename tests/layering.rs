//! The module map in docs/design.md is the rule: a module uses only the
//! modules listed above it. This reads the table and every `crate::` path
//! in src/, so the document and the code cannot drift apart, and a total
//! order leaves no room for import circles between modules.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The table's module names, top to bottom.
fn documented_order() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/design.md")).unwrap();
    let section = text
        .split("## The module map")
        .nth(1)
        .expect("docs/design.md has a module map")
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| module"))
        .map(|l| l.split('|').nth(1).unwrap().trim().to_string())
        .collect()
}

/// `pub mod` lines of src/lib.rs.
fn library_modules() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules named by `crate::` paths in `code`: `crate::a::b`
/// and each item of `use crate::{a, b::c}`. Comment lines are skipped.
fn crate_paths(code: &str) -> Vec<String> {
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at the group's top level: split on commas outside
            // nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push(first_segment(&item));
        } else {
            names.push(first_segment(rest));
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_module_uses_only_modules_above_it_in_the_design_map() {
    let order = documented_order();
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut lib = library_modules();
    lib.sort();
    let mut documented = order.clone();
    documented.sort();
    assert_eq!(
        lib, documented,
        "src/lib.rs's modules and docs/design.md's module map differ"
    );

    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let from = rank[top];
        let code = std::fs::read_to_string(&file).unwrap();
        for used in crate_paths(&code) {
            let Some(&to) = rank.get(used.as_str()) else {
                continue;
            };
            checked += 1;
            if to > from {
                wrong.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(checked > 100, "only {checked} crate:: paths found");
    assert!(
        wrong.is_empty(),
        "modules using one listed below them in docs/design.md:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn crate_paths_reads_single_and_grouped_uses() {
    let code = "use crate::fs::esp;\n// crate::cli in a comment\nuse crate::{self as c, io::{a, b}, spec};\nlet x = crate::qemu::find();";
    assert_eq!(crate_paths(code), ["fs", "io", "spec", "qemu"]);
}
