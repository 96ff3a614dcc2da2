//! The component's interface is the one `wit/edge.wit` documents, and the Spin
//! WIT vendored under `wit/deps/spin` is spin-sdk 5.2.0's, unchanged.

use std::path::{Path, PathBuf};

use rollout_tests::runtime;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_component_imports_and_exports_what_the_edge_world_says() {
    let (imports, exports) = runtime().interface_names();
    let world = std::fs::read_to_string(workspace().join("wit/edge.wit")).expect("wit/edge.wit");
    // Everything the world names explicitly, plus what `include wasi:cli/imports`
    // brings: the WASI 0.2 packages Rust's standard library links.
    // The linker merges WASI 0.2.x imports to the highest minor release any
    // dependency names (hosts match them by semver), so compare the 0.2 line.
    let line = |name: &str| match name.split_once("@0.2.") {
        Some((interface, _)) => format!("{interface}@0.2"),
        None => name.to_owned(),
    };
    let declared = |name: &str| {
        let name = line(name);
        world.contains(&format!("import {};", name.replace("@0.2", "@0.2.0")))
            || world.contains(&format!("import {name};"))
            || [
                "wasi:cli/",
                "wasi:io/",
                "wasi:clocks/",
                "wasi:filesystem/",
                "wasi:random/",
                "wasi:sockets/",
            ]
            .iter()
            .any(|p| name.starts_with(p) && name.ends_with("@0.2"))
            || name == "wasi:http/types@0.2"
    };
    let undeclared: Vec<&String> = imports.iter().filter(|i| !declared(i)).collect();
    assert!(
        undeclared.is_empty(),
        "imports missing from wit/edge.wit: {undeclared:?}"
    );
    for needed in [
        "fermyon:spin/key-value@2.0.0",
        "fermyon:spin/variables@2.0.0",
        "wasi:http/outgoing-handler@0.2",
    ] {
        assert!(
            imports.iter().any(|i| line(i) == needed),
            "component no longer imports {needed}: {imports:?}"
        );
    }
    let mut exports: Vec<String> = exports.iter().map(|e| line(e)).collect();
    exports.sort();
    assert_eq!(
        exports,
        [
            "rollout:edge/kernel@0.1.0",
            "wasi:http/incoming-handler@0.2"
        ]
    );
}

fn spin_sdk_wit() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|d| d.path().join("spin-sdk-5.2.0/wit/deps/spin@2.0.0"))
        .find(|p| p.is_dir())
}

#[test]
fn the_vendored_spin_wit_is_spin_sdks_unchanged() {
    let upstream = spin_sdk_wit()
        .expect("spin-sdk 5.2.0 sources in the cargo registry (the component build fetches them)");
    for file in ["key-value.wit", "variables.wit"] {
        let ours =
            std::fs::read(workspace().join("wit/deps/spin").join(file)).expect("vendored file");
        let theirs = std::fs::read(upstream.join(file)).expect("upstream file");
        assert!(
            ours == theirs,
            "wit/deps/spin/{file} differs from spin-sdk 5.2.0's"
        );
    }
}

#[test]
fn spin_toml_runs_this_component_with_the_variables_it_reads() {
    let text = std::fs::read_to_string(workspace().join("spin.toml")).expect("spin.toml");
    let manifest: toml::Table = text.parse().expect("spin.toml is TOML");
    assert_eq!(manifest["spin_manifest_version"].as_integer(), Some(2));
    let component = &manifest["component"]["rollout-router"];
    assert_eq!(
        component["source"].as_str(),
        Some(rollout_host::COMPONENT_PATH)
    );
    assert_eq!(
        component["build"]["command"].as_str(),
        Some(rollout_host::BUILD_COMMAND)
    );
    let stores = component["key_value_stores"].as_array().expect("stores");
    assert_eq!(
        stores.iter().filter_map(|s| s.as_str()).collect::<Vec<_>>(),
        ["default"]
    );
    // Every variable the component reads is wired from an application variable.
    let app_vars = manifest["variables"]
        .as_table()
        .expect("application variables");
    let vars = component["variables"]
        .as_table()
        .expect("component variables");
    for name in ["public_key", "old_origin"] {
        assert_eq!(
            vars[name].as_str(),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "{name}"
        );
        assert!(
            app_vars.contains_key(name),
            "{name} is an application variable"
        );
    }
    let outbound: Vec<&str> = component["allowed_outbound_hosts"]
        .as_array()
        .expect("outbound")
        .iter()
        .filter_map(|h| h.as_str())
        .collect();
    assert_eq!(outbound, ["{{ old_origin }}", "{{ new_origin }}"]);
    assert_eq!(
        manifest["trigger"]["http"][0]["route"].as_str(),
        Some("/...")
    );
}
