//! The files in examples/ that users copy: each must parse, and the CI
//! workflow must be gated by `rollout canary --wait` the way docs/control.md
//! says.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every step of every job in a workflow, with the job's name.
fn steps(workflow: &Yaml) -> Vec<(&str, &Yaml)> {
    let jobs = workflow["jobs"].as_hash().expect("`jobs` is a mapping");
    jobs.iter()
        .flat_map(|(name, job)| {
            let name = name.as_str().unwrap_or("?");
            job["steps"]
                .as_vec()
                .into_iter()
                .flatten()
                .map(move |step| (name, step))
        })
        .collect()
}

#[test]
fn the_github_actions_example_is_a_workflow_gated_by_rollout_canary_wait() {
    let path = examples().join("github-actions.yml");
    let text = std::fs::read_to_string(&path).expect("examples/github-actions.yml");
    let docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    assert_eq!(docs.len(), 1, "one YAML document");
    let workflow = &docs[0];

    // YAML 1.2, as GitHub reads it: `on` is a key, not the boolean true.
    assert!(
        workflow.as_hash().is_some(),
        "the workflow is a mapping: {workflow:?}"
    );
    for key in ["on", "jobs"] {
        assert!(!workflow[key].is_badvalue(), "the workflow has no `{key}`");
    }
    let steps = steps(workflow);
    assert!(!steps.is_empty(), "no job has `steps`");
    for (job, step) in &steps {
        let run = step["run"].as_str();
        let uses = step["uses"].as_str();
        assert!(
            run.is_some() != uses.is_some(),
            "a step of job {job} needs `run` or `uses` (one of them): {step:?}"
        );
    }

    let canary: Vec<&str> = steps
        .iter()
        .filter_map(|(_, step)| step["run"].as_str())
        .filter(|run| run.contains("rollout canary"))
        .collect();
    assert_eq!(canary.len(), 1, "one step runs `rollout canary`");
    let script = canary[0];
    assert!(
        script.contains("--wait"),
        "`rollout canary` waits for the plan's end: {script}"
    );
    // 8: the plan was aborted and rolled back; the job must say so and fail.
    assert!(
        ["8)", "-eq 8", "== 8"].iter().any(|s| script.contains(s)),
        "the script handles exit code 8 (rolled back): {script}"
    );

    // The credentials come from the repository's secrets, never the file.
    let mut env = vec![&workflow["env"]];
    let jobs = workflow["jobs"].as_hash().into_iter().flatten();
    env.extend(jobs.map(|(_, job)| &job["env"]));
    env.extend(steps.iter().map(|(_, step)| &step["env"]));
    let secret = |name: &str| {
        let wanted = format!("secrets.{name}");
        env.iter()
            .any(|e| e[name].as_str().is_some_and(|v| v.contains(&wanted)))
    };
    assert!(secret("ROLLOUT_URL"), "ROLLOUT_URL from secrets");
    assert!(secret("ROLLOUT_TOKEN"), "ROLLOUT_TOKEN from secrets");
}

#[test]
fn every_json_file_in_examples_parses() {
    let mut pending = vec![examples()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples/ is readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).expect("read");
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    panic!("{}: {e}", path.display());
                }
            }
        }
    }
}

#[test]
fn the_hooks_example_is_a_hooks_file_the_service_reads() {
    use rollout_control::hooks::{HookAction, HookEvent, HookSet};

    let path = examples().join("hooks.json");
    let set = HookSet::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let point = set.get("pg-restore-point").expect("the restore point hook");
    // Its program is found next to the file, as the service finds it.
    let HookAction::Command(argv) = &point.action else {
        panic!("a command: {point:?}")
    };
    assert!(
        argv[0].ends_with("examples/hooks/pg-restore-point.sh") && Path::new(&argv[0]).is_file(),
        "{argv:?}"
    );
    // A plan may require it: it runs on plan.start.
    assert!(set.check_required(&["pg-restore-point".to_owned()]).is_ok());
    assert!(point.on.contains(&HookEvent::Version));
}
