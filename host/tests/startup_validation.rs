//! Startup validation through the public API: whole apps (manifest, runtime
//! config, variables) that must be accepted or refused with a clear message,
//! without any component being built.

mod common;

use std::path::PathBuf;

use common::TempDir;
use host::kv::sqlite::DbLocation;
use host::runtime_config::StoreConfig;
use host::HostOptions;

const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "app"

[variables]
greeting = { default = "hello" }

[[trigger.http]]
route = "/..."
component = "web"

[component.web]
source = "web.wasm"
key_value_stores = ["default"]
[component.web.variables]
greeting = "{{ greeting }}"
"#;

/// Writes `manifest` (and `runtime_config`, if any) into `dir`.
fn app(dir: &TempDir, manifest: &str, runtime_config: Option<&str>) -> HostOptions {
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, manifest).unwrap();
    let runtime_config_file = runtime_config.map(|text| {
        let rc = dir.path().join("config/runtime-config.toml");
        std::fs::create_dir_all(rc.parent().unwrap()).unwrap();
        std::fs::write(&rc, text).unwrap();
        rc
    });
    HostOptions {
        runtime_config_file,
        variable_env: Some(vec![]),
        ..HostOptions::new(path)
    }
}

fn refused(opts: &HostOptions, needle: &str) {
    let err = format!("{:#}", host::open_app(opts).expect_err("should be refused"));
    assert!(
        err.contains(needle),
        "error {err:?} should mention {needle:?}"
    );
}

#[test]
fn a_plain_app_gets_the_default_store_in_dot_spin() {
    let dir = TempDir::new("plain");
    let config = host::open_app(&app(&dir, MANIFEST, None)).unwrap();
    assert_eq!(config.state_dir, Some(dir.path().join(".spin")));
    assert_eq!(
        config.stores["default"],
        StoreConfig::Sqlite(DbLocation::File(
            dir.path().join(".spin/sqlite_key_value.db")
        ))
    );
    assert_eq!(config.resolver.get("web", "greeting").unwrap(), "hello");
}

#[test]
fn state_dir_option_moves_the_default_store() {
    let dir = TempDir::new("statedir");
    let opts = HostOptions {
        state_dir: Some(dir.path().join("elsewhere")),
        ..app(&dir, MANIFEST, None)
    };
    let config = host::open_app(&opts).unwrap();
    assert_eq!(
        config.stores["default"],
        StoreConfig::Sqlite(DbLocation::File(
            dir.path().join("elsewhere/sqlite_key_value.db")
        ))
    );
}

#[test]
fn an_unconfigured_store_label_is_refused() {
    let dir = TempDir::new("label");
    let manifest = MANIFEST.replace(
        "key_value_stores = [\"default\"]",
        "key_value_stores = [\"default\", \"sessions\"]",
    );
    refused(
        &app(&dir, &manifest, None),
        "unknown key_value_stores label \"sessions\" for component \"web\"",
    );
}

#[test]
fn a_configured_store_label_is_accepted_and_resolved_beside_the_config() {
    let dir = TempDir::new("configured");
    let manifest = MANIFEST.replace(
        "key_value_stores = [\"default\"]",
        "key_value_stores = [\"default\", \"sessions\"]",
    );
    let rc = "[key_value_store.sessions]\ntype = \"spin\"\npath = \"sessions.db\"\n";
    let config = host::open_app(&app(&dir, &manifest, Some(rc))).unwrap();
    assert_eq!(
        config.stores["sessions"],
        StoreConfig::Sqlite(DbLocation::File(dir.path().join("config/sessions.db")))
    );
    assert!(config.stores.contains_key("default"));
}

#[test]
fn unsupported_runtime_config_is_refused() {
    let dir = TempDir::new("rc");
    refused(
        &app(
            &dir,
            MANIFEST,
            Some("[key_value_store.default]\ntype = \"azure_cosmos\"\naccount = \"a\"\n"),
        ),
        "key-value store type `azure_cosmos` is not supported by this host",
    );
    refused(
        &app(
            &dir,
            MANIFEST,
            Some("[sqlite_database.default]\ntype = \"spin\"\n"),
        ),
        "`sqlite_database` is not supported by this host",
    );
}

#[test]
fn a_missing_runtime_config_file_is_refused() {
    let dir = TempDir::new("rc-missing");
    let opts = HostOptions {
        runtime_config_file: Some(PathBuf::from("/nonexistent/runtime-config.toml")),
        ..app(&dir, MANIFEST, None)
    };
    refused(&opts, "cannot read runtime config file");
}

#[test]
fn a_required_variable_without_a_value_is_refused() {
    let dir = TempDir::new("required");
    let manifest = MANIFEST.replace(
        "greeting = { default = \"hello\" }",
        "greeting = { required = true }",
    );
    refused(&app(&dir, &manifest, None), "SPIN_VARIABLE_GREETING");
    let opts = HostOptions {
        variable_env: Some(vec![("SPIN_VARIABLE_GREETING".into(), "hey".into())]),
        ..app(&dir, &manifest, None)
    };
    let config = host::open_app(&opts).unwrap();
    assert_eq!(config.resolver.get("web", "greeting").unwrap(), "hey");
}

#[test]
fn manifest_errors_name_the_file_and_field() {
    let dir = TempDir::new("manifest");
    let opts = app(
        &dir,
        &MANIFEST.replace("name = \"app\"", "name = \"app\"\nmood = 1"),
        None,
    );
    let err = format!("{:#}", host::open_app(&opts).unwrap_err());
    assert!(err.contains("spin.toml"), "{err}");
    assert!(err.contains("`mood`"), "{err}");
    refused(
        &HostOptions::new(dir.path().join("missing.toml")),
        "cannot read manifest",
    );
}

#[tokio::test]
async fn start_refuses_a_missing_component_file() {
    let dir = TempDir::new("nowasm");
    let opts = app(&dir, MANIFEST, None);
    let err = match host::start(opts).await {
        Ok(_) => panic!("should not start"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("web.wasm") && err.contains("does not exist"),
        "{err}"
    );
}
