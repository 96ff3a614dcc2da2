//! The frozen bucket vectors: every build of the bucketing function, on every
//! target, must reproduce `tests/vectors/buckets.json` exactly.
//!
//! `ROLLOUT_BLESS_VECTORS=1 cargo test -p rollout-core --test vectors` adds any
//! generated case the file lacks. It refuses to change an existing case:
//! a changed bucket would move real users between arms.

use std::collections::HashMap;
use std::path::PathBuf;

use rollout_core::bucket_of;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VectorFile {
    description: String,
    cases: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Case {
    salt: String,
    key: String,
    bucket: u32,
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/buckets.json")
}

fn load() -> VectorFile {
    let text = std::fs::read_to_string(path()).expect("tests/vectors/buckets.json is committed");
    serde_json::from_str(&text).expect("vector file parses")
}

/// Deterministic filler text: hex of SHA-256 chained from a label.
fn filler(label: &str, len: usize) -> String {
    let mut out = String::with_capacity(len + 64);
    let mut block: [u8; 32] = Sha256::digest(label.as_bytes()).into();
    while out.len() < len {
        out.push_str(&hex::encode(block));
        block = Sha256::digest(block).into();
    }
    out.truncate(len);
    out
}

fn generated() -> Vec<(String, String)> {
    let salts: Vec<String> = [
        "web",
        "checkout",
        "api.v2",
        "new-nav",
        "flag_dark-mode",
        "Ünïcödé",
        "ルート",
        "🚀",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([filler("long salt", 200)])
    .collect();

    let mut keys: Vec<String> = vec![
        String::new(),
        " ".into(),
        "0".into(),
        "user-1".into(),
        "USER-1".into(),
        "alice@example.com".into(),
        "192.0.2.7".into(),
        "2001:db8::1".into(),
        "日本語のユーザー".into(),
        "用户标识".into(),
        "사용자".into(),
        "😀🎉👩‍👩‍👧".into(),
        "e\u{301}".into(),
        "\u{e9}".into(),
        "a\u{0}b".into(),
        "\u{0}".into(),
        "tab\there".into(),
        "line\nbreak".into(),
        "quote\"and\\backslash".into(),
        "\u{10ffff}".into(),
        filler("1k", 1024),
        filler("4k", 4096),
        "é".repeat(2048),
    ];
    for i in 0..110 {
        // UUID-shaped and numeric ids, the common real keys.
        let h = filler(&format!("key {i}"), 32);
        keys.push(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ));
        if i % 10 == 0 {
            keys.push((i * 7919).to_string());
        }
    }
    salts
        .iter()
        .flat_map(|s| keys.iter().map(move |k| (s.clone(), k.clone())))
        .collect()
}

#[test]
fn every_frozen_vector_still_holds() {
    let file = load();
    assert!(
        file.cases.len() >= 1000,
        "only {} vectors",
        file.cases.len()
    );
    let mut wrong = Vec::new();
    for c in &file.cases {
        let got = bucket_of(&c.salt, &c.key).get();
        if got != c.bucket {
            wrong.push(format!(
                "salt {:?} key {:?}: file {} computed {}",
                c.salt, c.key, c.bucket, got
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} vectors changed:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn vectors_cover_the_hard_cases() {
    let file = load();
    let has = |f: &dyn Fn(&Case) -> bool| file.cases.iter().any(f);
    assert!(has(&|c| c.key.is_empty()), "empty key");
    assert!(has(&|c| c.key.contains('\0')), "key with NUL");
    assert!(has(&|c| c.key.len() >= 4096), "4 KiB key");
    assert!(
        has(&|c| c
            .key
            .chars()
            .any(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch))),
        "CJK"
    );
    assert!(has(&|c| c.key.chars().any(|ch| ch >= '\u{1f600}')), "emoji");
    assert!(has(&|c| c.key.contains('\u{301}')), "combining mark");
    let salts: std::collections::HashSet<&str> =
        file.cases.iter().map(|c| c.salt.as_str()).collect();
    assert!(salts.len() >= 8, "only {} salts", salts.len());
}

#[test]
fn bless_adds_cases_and_never_changes_one() {
    if std::env::var_os("ROLLOUT_BLESS_VECTORS").is_none() {
        return;
    }
    let mut file = if path().exists() {
        load()
    } else {
        VectorFile {
            description: "Frozen bucket vectors: bucket = (u64::from_be_bytes(SHA-256(salt || 0x00 || key)[0..8]) \
                          * 1_000_000) >> 64. Never change a case; add new ones only."
                .into(),
            cases: Vec::new(),
        }
    };
    let known: HashMap<(String, String), u32> = file
        .cases
        .iter()
        .map(|c| ((c.salt.clone(), c.key.clone()), c.bucket))
        .collect();
    for (salt, key) in generated() {
        let bucket = bucket_of(&salt, &key).get();
        match known.get(&(salt.clone(), key.clone())) {
            Some(&frozen) => assert_eq!(
                frozen, bucket,
                "refusing to change frozen vector salt {salt:?} key {key:?}"
            ),
            None => file.cases.push(Case { salt, key, bucket }),
        }
    }
    let mut text = serde_json::to_string_pretty(&file).expect("serialises");
    text.push('\n');
    std::fs::create_dir_all(path().parent().expect("has parent")).expect("mkdir");
    std::fs::write(path(), text).expect("write vectors");
}
