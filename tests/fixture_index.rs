//! tests/fixtures/INDEX.md is the list of the suites' fixtures: this reads
//! its table and the folder, and fails when a fixture is not named, a named
//! one does not exist, or a row's "used by" names a test file that does
//! not, so the index and the folder cannot drift apart.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The fixtures under `dir`, '/'-separated and relative to it: each entry
/// of `elements/` as a whole (an element is read as one folder), every
/// other file on its own. INDEX.md itself is not a fixture.
fn on_disk(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "elements" && p.is_dir() {
            for el in std::fs::read_dir(&p).unwrap() {
                let el = el.unwrap().file_name();
                out.insert(format!("elements/{}", el.to_string_lossy()));
            }
        } else if name != "INDEX.md" {
            files(dir, &p, &mut out);
        }
    }
    out
}

/// Every file under `p` (or `p` itself), relative to `base`.
fn files(base: &Path, p: &Path, out: &mut BTreeSet<String>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            files(base, &e.unwrap().path(), out);
        }
    } else {
        let rel = p.strip_prefix(base).unwrap();
        let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
        out.insert(parts.join("/"));
    }
}

/// One table row: the fixture, what it exercises, the test files.
struct Row {
    fixture: String,
    exercises: String,
    used_by: Vec<String>,
}

/// The words between backticks in `cell`.
fn quoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The table's rows: the lines whose first cell is a quoted name.
fn rows(index: &str) -> Vec<Row> {
    index
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // Exactly one name per row: a row naming two would let one of
            // them go unchecked for its own description.
            let names = quoted(cells[1]);
            assert_eq!(names.len(), 1, "one fixture per row: {l}");
            Row {
                fixture: names[0].clone(),
                exercises: cells.get(2).unwrap_or(&"").to_string(),
                used_by: cells.get(3).map(|c| quoted(c)).unwrap_or_default(),
            }
        })
        .collect()
}

/// What is wrong between the fixtures under `dir`, the index text and the
/// test files under `tests`: one line per problem, none when they agree.
fn problems(dir: &Path, index: &str, tests: &Path) -> Vec<String> {
    let disk = on_disk(dir);
    let rows = rows(index);
    let mut named = BTreeSet::new();
    let mut out = Vec::new();
    for r in &rows {
        if !named.insert(r.fixture.clone()) {
            out.push(format!("{}: named twice", r.fixture));
        }
        if !disk.contains(&r.fixture) {
            out.push(format!("{}: in INDEX.md but not a fixture", r.fixture));
        }
        if r.exercises.is_empty() {
            out.push(format!("{}: says nothing of what it exercises", r.fixture));
        }
        if r.used_by.is_empty() {
            out.push(format!("{}: no test file uses it", r.fixture));
        }
        for t in &r.used_by {
            if !tests.join(t).is_file() {
                out.push(format!("{}: used by {t}, which does not exist", r.fixture));
            }
        }
    }
    for f in disk.difference(&named) {
        out.push(format!("{f}: a fixture INDEX.md does not name"));
    }
    out
}

#[test]
fn index_names_every_fixture_and_only_fixtures() {
    let tests = Path::new(ROOT).join("tests");
    let dir = tests.join("fixtures");
    let index = std::fs::read_to_string(dir.join("INDEX.md")).unwrap();
    // Guards against a table the parser no longer reads: no rows and no
    // fixtures would agree vacuously.
    assert!(rows(&index).len() >= 20, "INDEX.md's table not read");
    let wrong = problems(&dir, &index, &tests);
    assert!(
        wrong.is_empty(),
        "tests/fixtures/INDEX.md and tests/fixtures/ differ:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn problems_finds_unnamed_missing_twice_named_and_undescribed_fixtures() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("fixtures");
    let tests = t.path();
    std::fs::create_dir_all(dir.join("elements/named/install.d")).unwrap();
    std::fs::write(dir.join("elements/named/install.d/50-x"), "").unwrap();
    std::fs::create_dir_all(dir.join("elements/stray")).unwrap();
    std::fs::create_dir_all(dir.join("specs/esp")).unwrap();
    std::fs::write(dir.join("specs/esp/note.txt"), "").unwrap();
    std::fs::write(dir.join("INDEX.md"), "").unwrap();
    std::fs::write(tests.join("a.rs"), "").unwrap();
    let index = "| fixture | exercises | used by |\n|---|---|---|\n\
        | `elements/named` | hooks | `a.rs` |\n\
        | `specs/esp/note.txt` | an ESP file | `a.rs`, `gone.rs` |\n\
        | `specs/ghost.yaml` | nothing | `a.rs` |\n\
        | `elements/named` |  | `a.rs` |\n";
    let got = problems(&dir, index, tests);
    assert_eq!(
        got,
        [
            "specs/esp/note.txt: used by gone.rs, which does not exist",
            "specs/ghost.yaml: in INDEX.md but not a fixture",
            "elements/named: named twice",
            "elements/named: says nothing of what it exercises",
            "elements/stray: a fixture INDEX.md does not name",
        ]
    );
}
