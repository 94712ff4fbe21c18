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

#[test]
fn component_dependencies_are_refused() {
    let dir = TempDir::new("deps");
    for table in [
        "[component.web.dependencies]\n\"example:greeter/hello\" = { path = \"greeter.wasm\" }\n",
        "[component.web.dependencies]\n\"example:greeter/hello\" = \"1.0.0\"\n",
    ] {
        let manifest = format!("{MANIFEST}{table}");
        refused(
            &app(&dir, &manifest, None),
            "[component.web]: `dependencies`: component dependencies are not supported by this host",
        );
    }
    let manifest = MANIFEST.replace(
        "key_value_stores = [\"default\"]",
        "key_value_stores = [\"default\"]\ndependencies_inherit_configuration = true",
    );
    refused(
        &app(&dir, &manifest, None),
        "`dependencies_inherit_configuration`: component dependencies are not supported",
    );
    // An empty table asks for nothing and is accepted, as in Spin.
    let manifest = format!("{MANIFEST}[component.web.dependencies]\n");
    host::open_app(&app(&dir, &manifest, None)).unwrap();
}

/// The header of a core wasm module: magic and version 1.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// The header of a component: magic, version 0x0d, layer 1.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

/// One component section: id, size, contents (all shorter than 128 bytes,
/// so each length is one LEB128 byte).
fn section(id: u8, contents: &[u8]) -> Vec<u8> {
    assert!(contents.len() < 128);
    let mut out = vec![id, contents.len() as u8];
    out.extend_from_slice(contents);
    out
}

/// A name as a component import or export spells it.
fn extern_name(name: &str) -> Vec<u8> {
    assert!(name.len() < 128);
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out
}

/// A component that imports an (empty) instance named `import` and, if
/// `export` is given, exports that same instance under that name: the
/// smallest component with the import and export names of an interface.
fn component(import: &str, export: Option<&str>) -> Vec<u8> {
    let mut bytes = COMPONENT_HEADER.to_vec();
    // Type section: one instance type with no declarations.
    bytes.extend(section(7, &[0x01, 0x42, 0x00]));
    // Import section: `import` as an instance of type 0.
    let mut imports = vec![0x01];
    imports.extend(extern_name(import));
    imports.extend([0x05, 0x00]);
    bytes.extend(section(10, &imports));
    if let Some(export) = export {
        // Export section: instance 0 as `export`, no type ascription.
        let mut exports = vec![0x01];
        exports.extend(extern_name(export));
        exports.extend([0x05, 0x00, 0x00]);
        bytes.extend(section(11, &exports));
    }
    bytes
}

/// Starts the one-component app `MANIFEST` with `wasm` as `web.wasm`;
/// returns the startup error.
async fn start_error(tag: &str, wasm: &[u8]) -> String {
    let dir = TempDir::new(tag);
    std::fs::write(dir.path().join("web.wasm"), wasm).unwrap();
    match host::start(app(&dir, MANIFEST, None)).await {
        Ok(_) => panic!("should not start"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn start_refuses_a_core_wasm_module() {
    let err = start_error("core", CORE_MODULE).await;
    assert!(err.contains("component `web`"), "{err}");
    assert!(
        err.contains(
            "web.wasm\" is a core wasm module (WASI preview 1); \
             this host runs WASI 0.3.0 (spin-sdk 7) and WASI 0.2 components only"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn start_refuses_a_wasi_p3_release_candidate_http_component() {
    // What spin-sdk 6 builds, which Spin 4 runs through shims.
    let err = start_error(
        "p3-rc",
        &component(
            "wasi:http/types@0.3.0-rc-2026-03-15",
            Some("wasi:http/handler@0.3.0-rc-2026-03-15"),
        ),
    )
    .await;
    assert!(err.contains("component `web`"), "{err}");
    assert!(
        err.contains(
            "web.wasm\" exports wasi:http/handler@0.3.0-rc-2026-03-15, a WASI 0.3 release \
             candidate (spin-sdk 6 builds wasi:http/handler@0.3.0-rc-2026-03-15); this host runs \
             WASI 0.3.0 final (spin-sdk 7) and WASI 0.2 components only"
        ),
        "{err}"
    );
    // An older release candidate is named the same way.
    let err = start_error(
        "p3-rc-old",
        &component(
            "wasi:http/types@0.3.0-rc-2025-09-16",
            Some("wasi:http/handler@0.3.0-rc-2025-09-16"),
        ),
    )
    .await;
    assert!(
        err.contains("exports wasi:http/handler@0.3.0-rc-2025-09-16, a WASI 0.3 release candidate"),
        "{err}"
    );
}

#[tokio::test]
async fn start_refuses_a_component_importing_a_wasi_p3_release_candidate() {
    let err = start_error(
        "p3-rc-import",
        &component("wasi:cli/environment@0.3.0-rc-2026-03-15", None),
    )
    .await;
    assert!(
        err.contains(
            "imports wasi:cli/environment@0.3.0-rc-2026-03-15, a WASI 0.3 release candidate"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_wasi_p3_final_import_is_no_refusal_of_its_own() {
    // WASI 0.3.0 final is linked: a component importing it and exporting
    // no handler is refused for that alone.
    let err = start_error("p3-import", &component("wasi:cli/environment@0.3.0", None)).await;
    assert!(!err.contains("release candidate"), "{err}");
    assert!(
        err.contains(
            "component `web` is not a wasi:http handler (it must export \
             wasi:http/incoming-handler@0.2 or wasi:http/handler@0.3.0)"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_wasi_p2_component_is_not_taken_for_wasi_p3() {
    // Imports a WASI 0.2 interface and exports nothing: refused later, for
    // not being an HTTP handler, never as WASI 0.3 or a core module.
    let err = start_error("p2", &component("wasi:http/types@0.2.3", None)).await;
    assert!(!err.contains("WASI 0.3"), "{err}");
    assert!(!err.contains("core wasm module"), "{err}");
    assert!(
        err.contains("component `web` is not a wasi:http handler"),
        "{err}"
    );
}
