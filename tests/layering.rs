//! The edges depend on each other one way (see the crate map in `src/lib.rs`): `http` may use
//! `ws` and `app`; `ws` may use `app`; `app`, `ws`, `problem` and `form` never use `http`, and
//! `app` never uses `ws`. A cycle would come back with one `use`, so this reads the sources.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{files_under, manifest_dir};

/// Every `.rs` file at `path` (a file, or a directory searched recursively).
fn sources(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    files_under(path, &[])
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

/// Code lines of `file` (not comments) naming `crate::<module>`, also inside `crate::{...}`.
fn uses_of(file: &Path, module: &str) -> Vec<String> {
    let text = fs::read_to_string(file).expect("a readable source file");
    let needle = format!("crate::{module}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .filter(|l| {
            let words = || l.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
            words().any(|w| w == needle || w.starts_with(&format!("{needle}::")))
                || (l.contains("crate::{") && words().any(|w| w == module))
        })
        .map(|l| format!("{}: {l}", file.display()))
        .collect()
}

fn assert_no_uses(paths: &[&str], module: &str) {
    let root = manifest_dir().join("src");
    let mut found = Vec::new();
    for p in paths {
        let path = root.join(p);
        assert!(
            path.exists(),
            "{} is missing: update this test",
            path.display()
        );
        for file in sources(&path) {
            found.extend(uses_of(&file, module));
        }
    }
    assert!(
        found.is_empty(),
        "uses of crate::{module}:\n{}",
        found.join("\n")
    );
}

#[test]
fn ws_app_and_shared_parsing_do_not_use_http() {
    assert_no_uses(
        &["ws.rs", "ws", "app.rs", "app", "problem.rs", "form.rs"],
        "http",
    );
}

#[test]
fn app_does_not_use_ws() {
    assert_no_uses(&["app.rs", "app"], "ws");
}

#[test]
fn the_check_sees_a_use() {
    // The http edge does hand over to ws: if this finds nothing, the check is blind.
    let routes = manifest_dir().join("src/http/routes.rs");
    assert!(!uses_of(&routes, "ws").is_empty());
}
