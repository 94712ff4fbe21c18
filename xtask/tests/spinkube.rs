//! The SpinKube manifests in `deploy/spinkube/` against SpinKube's SpinApp
//! CRD (`shared/reference/spinkube/core.spinkube.dev_spinapps.yaml`, kept
//! beside the workspace so no test needs a cluster or the network), and
//! against the app they deploy (`spin.toml`).
//!
//! Also proves the validator catches real mistakes: broken copies of the
//! manifest must be rejected, each for the reason it was broken.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map};
use xtask::openapi::{Crd, Value, Violation};
use xtask::yaml::{parse_documents, yaml11_booleans};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

fn crd_path() -> PathBuf {
    workspace_root().join("../shared/reference/spinkube/core.spinkube.dev_spinapps.yaml")
}

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy/spinkube")
}

/// The CRD, compiled. A missing file fails the test: skipping would let a
/// broken manifest pass unnoticed.
fn spinapp_crd() -> Crd {
    let path = crd_path();
    let text = fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "SpinKube's SpinApp CRD is missing at {} ({err}). These tests validate \
             deploy/spinkube/ against it and must not pass without it: put the shared \
             folder (shared/reference/spinkube/core.spinkube.dev_spinapps.yaml) beside \
             the workspace.",
            path.display()
        )
    });
    let documents = parse_documents(&text)
        .unwrap_or_else(|err| panic!("{} does not parse: {err}", path.display()));
    let [crd] = documents.as_slice() else {
        panic!(
            "{}: expected one document, found {}",
            path.display(),
            documents.len()
        );
    };
    let crd = Crd::from_value(crd).unwrap_or_else(|errors| {
        panic!(
            "{}: the validator cannot check this CRD:\n{}",
            path.display(),
            lines(&errors)
        )
    });
    assert_eq!(
        (crd.group.as_str(), crd.kind.as_str()),
        ("core.spinkube.dev", "SpinApp")
    );
    crd
}

fn lines(errors: &[Violation]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every YAML file of `deploy/spinkube/` with its documents.
fn manifests() -> Vec<(PathBuf, String, Vec<Value>)> {
    let dir = deploy_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let documents =
                parse_documents(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            (path, text, documents)
        })
        .collect()
}

fn kind(document: &Value) -> Option<&str> {
    document.get("kind").and_then(Value::as_str)
}

/// The SpinApp of `deploy/spinkube/spinapp.yaml`.
fn the_spinapp() -> Value {
    let path = deploy_dir().join("spinapp.yaml");
    let documents = parse_documents(&fs::read_to_string(&path).unwrap()).unwrap();
    documents
        .into_iter()
        .find(|d| kind(d) == Some("SpinApp"))
        .expect("spinapp.yaml holds a SpinApp")
}

fn field<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, step| {
        v.get(step)
            .unwrap_or_else(|| panic!("no `{step}` on the way to `{path}`"))
    })
}

#[test]
fn every_spinapp_manifest_satisfies_the_crd() {
    let crd = spinapp_crd();
    let mut spinapps = 0;
    let mut problems = Vec::new();
    for (path, text, documents) in manifests() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for (line, scalar) in yaml11_booleans(&text) {
            problems.push(format!(
                "{name}:{line}: unquoted `{scalar}` is a boolean to Kubernetes (YAML 1.1): quote it"
            ));
        }
        for (index, document) in documents.iter().enumerate() {
            // The other objects (Secret, Deployment, Service) have no schema
            // here; they must at least be objects kubectl can apply.
            for needed in ["apiVersion", "kind"] {
                if document.get(needed).and_then(Value::as_str).is_none() {
                    problems.push(format!("{name}, document {}: no `{needed}`", index + 1));
                }
            }
            let object_name = document
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str);
            if object_name.is_none() {
                problems.push(format!(
                    "{name}, document {}: no `metadata.name`",
                    index + 1
                ));
            }
            let api_version = document.get("apiVersion").and_then(Value::as_str);
            let is_spinapp = kind(document) == Some("SpinApp")
                || api_version.is_some_and(|v| v.starts_with("core.spinkube.dev/"));
            if !is_spinapp {
                continue;
            }
            spinapps += 1;
            for error in crd.validate(document) {
                problems.push(format!("{name}, document {}: {error}", index + 1));
            }
        }
    }
    assert!(
        spinapps > 0,
        "no SpinApp manifest found in {}",
        deploy_dir().display()
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// What the README promises: three replicas on SpinKube's shim, sharing one
/// Redis `default` store whose URL comes from a Secret in this directory.
#[test]
fn the_spinapp_runs_three_replicas_on_one_redis_store_from_a_secret() {
    let app = the_spinapp();
    let spec = field(&app, "spec");
    assert_eq!(field(spec, "replicas"), &json!(3));
    assert_eq!(
        field(spec, "executor").as_str(),
        Some("containerd-shim-spin")
    );
    let stores = field(spec, "runtimeConfig.keyValueStores")
        .as_array()
        .unwrap();
    let [store] = stores.as_slice() else {
        panic!(
            "expected exactly the `default` store, found {} stores",
            stores.len()
        );
    };
    assert_eq!(field(store, "name").as_str(), Some("default"));
    assert_eq!(field(store, "type").as_str(), Some("redis"));
    let options = field(store, "options").as_array().unwrap();
    let [url] = options.as_slice() else {
        panic!("expected the `url` option alone, found {options:?}");
    };
    assert_eq!(field(url, "name").as_str(), Some("url"));
    assert!(
        url.get("value").is_none(),
        "the URL must come from the Secret, not be written in"
    );
    let secret_name = field(url, "valueFrom.secretKeyRef.name").as_str().unwrap();
    let secret_key = field(url, "valueFrom.secretKeyRef.key").as_str().unwrap();

    // The referenced Secret is shipped here (as a placeholder), with that key.
    let secret = manifests()
        .into_iter()
        .flat_map(|(_, _, documents)| documents)
        .find(|d| {
            kind(d) == Some("Secret")
                && d.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    == Some(secret_name)
        })
        .unwrap_or_else(|| panic!("no Secret `{secret_name}` in deploy/spinkube/"));
    assert_eq!(field(&secret, "apiVersion").as_str(), Some("v1"));
    let url = field(&secret, &format!("stringData.{secret_key}"))
        .as_str()
        .expect("the Secret's URL is a string");
    assert!(
        url.starts_with("redis://") || url.starts_with("rediss://"),
        "{url:?} is not a Redis URL"
    );
}

/// Every variable the SpinApp sets is one spin.toml declares: the operator
/// passes them as SPIN_VARIABLE_<NAME>, and Spin ignores a misspelt one
/// without a word, leaving the default in force.
#[test]
fn the_spinapp_sets_only_variables_spin_toml_declares() {
    let spin_toml = fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
    let declared = declared_variables(&spin_toml);
    assert!(
        declared.contains(&"max_sessions".to_owned()),
        "spin.toml's [variables] not found: {declared:?}"
    );
    let app = the_spinapp();
    for variable in field(&app, "spec.variables").as_array().unwrap() {
        let name = field(variable, "name").as_str().unwrap();
        assert!(
            declared.iter().any(|d| d == name),
            "the SpinApp sets `{name}`, which spin.toml does not declare (declared: {declared:?})"
        );
    }
}

/// The keys of spin.toml's top-level `[variables]` table. A line scan, not
/// a TOML parser: that table is written one `name = { default = … }` a line.
fn declared_variables(spin_toml: &str) -> Vec<String> {
    let mut in_variables = false;
    let mut names = Vec::new();
    for line in spin_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_variables = line == "[variables]";
        } else if in_variables && !line.starts_with('#') {
            if let Some((name, _)) = line.split_once('=') {
                names.push(name.trim().to_owned());
            }
        }
    }
    names
}

// ---- broken copies -------------------------------------------------------

/// One step of a path into a document.
enum Step {
    Key(&'static str),
    Index(usize),
}

use Step::{Index, Key};

/// `path` written as the validator writes its errors' paths
/// (`spec.runtimeConfig.keyValueStores[0].type`), as steps.
fn steps(path: &'static str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        steps.push(Key(key));
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let index = index.strip_suffix(']').expect("an index ends with ]");
            steps.push(Index(index.parse().expect("an index is a number")));
        }
    }
    steps
}

fn at<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |v, step| match step {
        Key(key) => v.get_mut(key).unwrap_or_else(|| panic!("no field `{key}`")),
        Index(i) => v.get_mut(i).unwrap_or_else(|| panic!("no list item [{i}]")),
    })
}

/// The fields of the object holding the last key of `path`, and that key.
fn parent_fields<'a>(
    document: &'a mut Value,
    path: &'static str,
) -> (&'a mut Map<String, Value>, &'static str) {
    let steps = steps(path);
    let (Key(last), parent) = steps.split_last().unwrap() else {
        panic!("{path} does not end with a key")
    };
    let Value::Object(fields) = at(document, parent) else {
        panic!("not an object")
    };
    (fields, last)
}

/// Sets (or adds) the field at the end of `path`.
fn set(document: &mut Value, path: &'static str, value: Value) {
    let (fields, last) = parent_fields(document, path);
    fields.insert(last.to_owned(), value);
}

/// Removes the field at the end of `path`, which must be there.
fn remove(document: &mut Value, path: &'static str) {
    let (fields, last) = parent_fields(document, path);
    assert!(fields.remove(last).is_some(), "no field `{last}` to remove");
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// A broken copy is rejected, with an error at `path` saying `message`.
fn assert_rejected(crd: &Crd, what: &str, document: &Value, path: &str, message: &str) {
    let errors = crd.validate(document);
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(message)),
        "{what}: expected an error `{path}: …{message}…`, got:\n{}",
        lines(&errors)
    );
}

#[test]
fn broken_copies_of_the_spinapp_are_rejected() {
    let crd = spinapp_crd();
    let good = the_spinapp();
    assert_eq!(
        crd.validate(&good),
        vec![],
        "the unbroken manifest must pass"
    );

    // Each case: what was broken, how, and the error it must give.
    type Break = fn(&mut Value);
    let cases: &[(&str, Break, &str, &str)] = &[
        (
            "unknown field (a typo of replicas)",
            |d| set(d, "spec.replica", json!(3)),
            "spec",
            "unknown field `replica`",
        ),
        (
            "unknown field deep in the runtime config",
            |d| {
                let path = "spec.runtimeConfig.keyValueStores[0].options[0].valueFrom.secretKeyRef.namespace";
                set(d, path, string("default"))
            },
            "spec.runtimeConfig.keyValueStores[0].options[0].valueFrom.secretKeyRef",
            "unknown field `namespace`",
        ),
        (
            "the runtime config in Spin's TOML shape instead of SpinKube's",
            |d| {
                let path = "spec.runtimeConfig.keyValueStores[0].url";
                set(d, path, string("redis://redis:6379"))
            },
            "spec.runtimeConfig.keyValueStores[0]",
            "unknown field `url`",
        ),
        (
            "wrong type: replicas as a string",
            |d| set(d, "spec.replicas", string("3")),
            "spec.replicas",
            "expected integer, found string",
        ),
        (
            "wrong type: a variable's value unquoted",
            |d| {
                let path = "spec.variables[1].value";
                set(d, path, json!(100000))
            },
            "spec.variables[1].value",
            "expected string, found integer 100000 (quote it)",
        ),
        (
            "wrong type: the store list as a map",
            |d| {
                let path = "spec.runtimeConfig.keyValueStores";
                set(d, path, json!({"default": "redis"}))
            },
            "spec.runtimeConfig.keyValueStores",
            "expected array, found object",
        ),
        (
            "replicas beyond int32",
            |d| set(d, "spec.replicas", json!(1_i64 << 33)),
            "spec.replicas",
            "does not fit in int32",
        ),
        (
            "a memory limit that is not a quantity",
            |d| {
                let path = "spec.resources.limits.memory";
                set(d, path, string("256MB"))
            },
            "spec.resources.limits.memory",
            "does not match the pattern",
        ),
        (
            "missing required field: spec.image",
            |d| remove(d, "spec.image"),
            "spec",
            "missing required field `image`",
        ),
        (
            "missing required field: the store's type",
            |d| {
                let path = "spec.runtimeConfig.keyValueStores[0].type";
                remove(d, path)
            },
            "spec.runtimeConfig.keyValueStores[0]",
            "missing required field `type`",
        ),
        (
            "missing required field: the Secret's key",
            |d| {
                let path =
                    "spec.runtimeConfig.keyValueStores[0].options[0].valueFrom.secretKeyRef.key";
                remove(d, path)
            },
            "spec.runtimeConfig.keyValueStores[0].options[0].valueFrom.secretKeyRef",
            "missing required field `key`",
        ),
        (
            "an empty list left as null",
            |d| set(d, "spec.variables", Value::Null),
            "spec.variables",
            "null is not allowed",
        ),
        (
            "the operator's old API group",
            |d| set(d, "apiVersion", string("core.spinoperator.dev/v1alpha1")),
            "apiVersion",
            "expected one of core.spinkube.dev/v1alpha1",
        ),
        (
            "wrong kind",
            |d| set(d, "kind", string("SpinAppExecutor")),
            "kind",
            "expected \"SpinApp\"",
        ),
        (
            "no name",
            |d| remove(d, "metadata.name"),
            "metadata",
            "missing required field `name`",
        ),
        (
            "a name Kubernetes refuses",
            |d| set(d, "metadata.name", string("Spin_Sessions")),
            "metadata.name",
            "not a lowercase RFC 1123 subdomain",
        ),
    ];
    for (what, breaks, path, message) in cases {
        let mut broken = good.clone();
        breaks(&mut broken);
        assert_rejected(&crd, what, &broken, path, message);
    }
}

/// The mistake the YAML 1.2 parser cannot see: `value: yes` is a string to
/// it and a boolean to Kubernetes, which then refuses the variable.
#[test]
fn an_unquoted_yaml11_boolean_is_caught() {
    let text = fs::read_to_string(deploy_dir().join("spinapp.yaml")).unwrap();
    let needle = "value: \"always\"";
    assert_eq!(
        text.matches(needle).count(),
        1,
        "spinapp.yaml changed: update this test"
    );
    let broken = text.replace(needle, "value: on");
    let line = broken
        .lines()
        .position(|l| l.trim() == "value: on")
        .unwrap()
        + 1;
    assert_eq!(yaml11_booleans(&broken), vec![(line, "on".to_owned())]);
    assert_eq!(yaml11_booleans(&text), vec![]);
}
