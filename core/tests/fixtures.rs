//! Golden config fixtures: every file in `fixtures/valid/` is accepted, and
//! every file in `fixtures/invalid/` is refused with exactly the message in
//! its `.err` file. `ROLLOUT_BLESS=1` rewrites the `.err` files from the
//! current messages (review the diff before committing it).

use std::path::{Path, PathBuf};

use rollout_core::Config;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

#[test]
fn valid_fixtures_are_accepted_and_round_trip() {
    for path in fixtures("valid") {
        let bytes = std::fs::read(&path).expect("read fixture");
        let config =
            Config::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let again = Config::try_from(config.to_doc()).expect("normalised doc is valid");
        assert_eq!(config, again, "{}", path.display());
    }
}

#[test]
fn invalid_fixtures_fail_with_their_expected_message() {
    let bless = std::env::var_os("ROLLOUT_BLESS").is_some();
    let mut mismatches = Vec::new();
    for path in fixtures("invalid") {
        let bytes = std::fs::read(&path).expect("read fixture");
        let got = match Config::from_json(&bytes) {
            Ok(_) => "accepted (expected an error)".to_owned(),
            Err(e) => e.to_string(),
        };
        let err_path = path.with_extension("err");
        if bless {
            std::fs::write(&err_path, format!("{got}\n")).expect("write .err");
            continue;
        }
        let want = std::fs::read_to_string(&err_path).unwrap_or_else(|_| {
            panic!(
                "{} has no .err file (ROLLOUT_BLESS=1 writes it)",
                path.display()
            )
        });
        if got != want.trim_end() {
            mismatches.push(format!(
                "{}:\n  want: {}\n  got:  {got}",
                path.display(),
                want.trim_end()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
