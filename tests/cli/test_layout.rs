//! The test layout itself: with `autotests = false` cargo builds only the binaries Cargo.toml
//! declares, so a test file nobody declares would never run. Every `tests/<area>/*.rs` must be a
//! `mod` of its area's `main.rs`, every area a `[[test]]`, and no test file may sit in `tests/`.

use std::path::Path;

#[test]
fn every_test_file_is_declared_in_a_test_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_file() && name.ends_with(".rs") {
            problems.push(format!("tests/{name}: move it into an area (tests/<area>/{name}, `mod` in its main.rs)"));
            continue;
        }
        if !path.is_dir() || name == "support" {
            continue;
        }
        let main = std::fs::read_to_string(path.join("main.rs")).unwrap_or_default();
        if !cargo.contains(&format!("path = \"tests/{name}/main.rs\"")) {
            problems.push(format!("tests/{name}/main.rs is no [[test]] in Cargo.toml"));
        }
        for file in std::fs::read_dir(&path).unwrap().flatten() {
            let file = file.file_name().to_string_lossy().into_owned();
            let Some(module) = file.strip_suffix(".rs") else { continue };
            if module != "main" && !main.lines().any(|l| l.trim() == format!("mod {module};")) {
                problems
                    .push(format!("tests/{name}/{file} is not declared: add `mod {module};` to tests/{name}/main.rs"));
            }
        }
    }
    assert!(problems.is_empty(), "test files that would never run:\n{}", problems.join("\n"));
}
