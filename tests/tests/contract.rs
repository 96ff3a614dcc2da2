//! The component's interface is the one `wit/edge.wit` documents (so is the
//! kernel component's), and the Spin WIT vendored under `wit/deps/spin` is
//! spin-sdk 5.2.0's, unchanged.

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
        // Pre-release interfaces (wasi:keyvalue@0.2.0-draft2) are named exactly.
        if world.contains(&format!("import {name};")) {
            return true;
        }
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
        // Pushes are written by compare-and-swap (0.2.0-draft2 on this line).
        "wasi:keyvalue/atomics@0.2",
    ] {
        assert!(
            imports.iter().any(|i| line(i) == needed),
            "component no longer imports {needed}: {imports:?}"
        );
    }
    // The shipped edge serves requests and nothing else: the kernel export
    // lives in its own component (below).
    let exports: Vec<String> = exports.iter().map(|e| line(e)).collect();
    assert_eq!(exports, ["wasi:http/incoming-handler@0.2"]);
}

#[test]
fn the_kernel_component_exports_the_kernel_and_imports_what_its_world_says() {
    let path = match std::env::var_os("ROLLOUT_KERNEL") {
        Some(p) => PathBuf::from(p),
        None => workspace().join(rollout_host::KERNEL_PATH),
    };
    let kernel = rollout_host::KernelComponent::load(&path)
        .unwrap_or_else(|e| panic!("{e:#}\n(this test checks the built kernel component)"));
    let (imports, exports) = kernel.interface_names();
    assert_eq!(exports, ["rollout:edge/kernel@0.1.0"]);
    // World `kernel-component`: the WASI 0.2 packages Rust's standard library
    // links (any 0.2.x) and the Spin key-value store `route-repeat` reads.
    let declared = |name: &str| {
        name == "fermyon:spin/key-value@2.0.0"
            || [
                "wasi:cli/",
                "wasi:io/",
                "wasi:clocks/",
                "wasi:filesystem/",
                "wasi:random/",
                "wasi:sockets/",
            ]
            .iter()
            .any(|p| name.starts_with(p) && name.contains("@0.2."))
    };
    let undeclared: Vec<&String> = imports.iter().filter(|i| !declared(i)).collect();
    assert!(
        undeclared.is_empty(),
        "kernel imports missing from world kernel-component: {undeclared:?}"
    );
    assert!(
        imports.iter().any(|i| i == "fermyon:spin/key-value@2.0.0"),
        "the kernel no longer reads the edge's store: {imports:?}"
    );
    let wit = std::fs::read_to_string(workspace().join("wit/edge.wit")).expect("wit/edge.wit");
    let world = wit
        .split_once("world kernel-component {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(body, _)| body)
        .expect("wit/edge.wit has world kernel-component");
    for line in [
        "include wasi:cli/imports@0.2.0;",
        "import fermyon:spin/key-value@2.0.0;",
        "include kernel-exports;",
    ] {
        assert!(world.contains(line), "world kernel-component: {line}");
    }
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

#[test]
fn the_vendored_keyvalue_wit_is_spin_sdks_unchanged() {
    let upstream = spin_sdk_wit()
        .and_then(|spin| Some(spin.parent()?.join("keyvalue-2024-10-17")))
        .filter(|p| p.is_dir())
        .expect("spin-sdk 5.2.0 sources in the cargo registry (the component build fetches them)");
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("wit directory")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let ours = workspace().join("wit/deps/keyvalue");
    let files = names(&upstream);
    assert_eq!(
        names(&ours),
        files,
        "wit/deps/keyvalue holds other files than spin-sdk 5.2.0's"
    );
    for file in &files {
        let vendored = std::fs::read(ours.join(file)).expect("vendored file");
        let theirs = std::fs::read(upstream.join(file)).expect("upstream file");
        assert!(
            vendored == theirs,
            "wit/deps/keyvalue/{file} differs from spin-sdk 5.2.0's"
        );
    }
}

#[test]
fn the_sample_wrangler_toml_deploys_the_worker_with_every_setting_it_reads() {
    let path = workspace().join("router/js/wrangler.toml");
    let text = std::fs::read_to_string(&path).expect("router/js/wrangler.toml");
    let manifest: toml::Table = text.parse().expect("wrangler.toml is TOML");
    let main = manifest["main"].as_str().expect("main");
    assert!(
        workspace().join("router/js").join(main).is_file(),
        "main = {main:?} names a file in router/js"
    );
    // handler.mjs reads exactly these from its environment.
    let vars = manifest["vars"].as_table().expect("[vars]");
    for name in ["OLD_ORIGIN", "PUBLIC_KEY", "ROLLOUT_ALLOWED_ORIGINS"] {
        assert!(vars.contains_key(name), "[vars] sets {name}");
    }
    let allowed = vars["ROLLOUT_ALLOWED_ORIGINS"].as_str().expect("a string");
    let list = rollout_core::edge::request::AllowList::parse(allowed)
        .unwrap_or_else(|e| panic!("ROLLOUT_ALLOWED_ORIGINS is what the edge parses: {e}"));
    let old = rollout_core::Origin::parse(vars["OLD_ORIGIN"].as_str().expect("a string"))
        .expect("OLD_ORIGIN is an origin");
    assert!(
        list.permits(&old),
        "the bootstrap origin is on the allow-list"
    );
    let kv = manifest["kv_namespaces"]
        .as_array()
        .expect("[[kv_namespaces]]");
    assert!(
        kv.iter()
            .any(|n| n["binding"].as_str() == Some("ROLLOUT_KV")),
        "the ROLLOUT_KV binding the handler reads"
    );
}
