//! `spin.toml` (manifest version 2): parsing and validation.
//!
//! Accepts the subset of Spin's manifest this host implements, with Spin's
//! own rules for names and values. Everything else Spin knows (inline
//! components, remote sources, files, SQLite, AI models, outbound hosts,
//! dependencies, other trigger types...) and anything Spin does not know is
//! rejected with a message naming the field, rather than ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use toml::{Table, Value};

use crate::toml_fields::{type_name, Fields};
use crate::variables::VariableDecl;

/// `[application]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// `name` (required).
    pub name: String,
    /// `version`.
    pub version: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `authors`.
    pub authors: Vec<String>,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// Optional `id`.
    pub id: Option<String>,
    /// `route`, as written.
    pub route: String,
    /// `component`: the id of a `[component.<id>]`.
    pub component: String,
}

/// One `[component.<id>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// The component id (kebab-case).
    pub id: String,
    /// The Wasm file, resolved against the manifest's directory.
    pub source: PathBuf,
    /// `description`.
    pub description: Option<String>,
    /// `key_value_stores`: the store labels the component may open.
    pub key_value_stores: Vec<String>,
    /// `variables`: component variable name to template.
    pub variables: BTreeMap<String, String>,
    /// `environment`: WASI environment variables.
    pub environment: BTreeMap<String, String>,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The directory holding it: relative component sources resolve here.
    pub dir: PathBuf,
    /// `[application]`.
    pub application: Application,
    /// `[variables]`.
    pub variables: BTreeMap<String, VariableDecl>,
    /// `[[trigger.http]]`, in manifest order.
    pub triggers: Vec<HttpTrigger>,
    /// `[component.*]`, by id.
    pub components: BTreeMap<String, Component>,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let path = std::path::absolute(path)
            .with_context(|| format!("invalid manifest path \"{}\"", path.display()))?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read manifest \"{}\"", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &dir)
            .with_context(|| format!("invalid manifest \"{}\"", path.display()))
            .map(|mut m| {
                m.path = path;
                m
            })
    }

    /// Validates manifest text; component sources resolve against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let doc: Table = toml::from_str(text).context("not valid TOML")?;
        let mut top = Fields::new(&doc, "spin.toml");

        if top.raw("spin_version").is_some() {
            bail!("manifest version 1 (`spin_version`) is not supported: use `spin_manifest_version = 2`");
        }
        match top.raw("spin_manifest_version") {
            Some(Value::Integer(2)) => {}
            Some(Value::Integer(1)) => bail!(
                "`spin_manifest_version = 1` is not supported by this host: use manifest version 2"
            ),
            Some(Value::String(s)) if s == "1" => bail!(
                "`spin_manifest_version = \"1\"` (manifest version 1) is not supported by this \
                 host: use `spin_manifest_version = 2`"
            ),
            Some(other) => bail!(
                "`spin_manifest_version` must be 2, found {other} ({})",
                type_name(other)
            ),
            None => bail!("missing `spin_manifest_version = 2`"),
        }

        let application = match top.table("application")? {
            Some(table) => parse_application(table)?,
            None => bail!("missing [application] table"),
        };

        let mut variables = BTreeMap::new();
        if let Some(table) = top.table("variables")? {
            for (name, value) in table {
                variables.insert(name.clone(), parse_variable(name, value)?);
            }
        }

        let mut components = BTreeMap::new();
        if let Some(table) = top.table("component")? {
            for (id, value) in table {
                check_id(id, '-', false)
                    .map_err(|e| anyhow::anyhow!("[component.{id}]: invalid component id: {e}"))?;
                let Value::Table(body) = value else {
                    bail!(
                        "[component.{id}] must be a table, found {}",
                        type_name(value)
                    );
                };
                components.insert(id.clone(), parse_component(id, body, dir)?);
            }
        }

        let mut triggers = Vec::new();
        match top.table("trigger")? {
            None => bail!("no triggers: add at least one [[trigger.http]]"),
            Some(table) => {
                for (kind, value) in table {
                    if kind != "http" {
                        bail!(
                            "[[trigger.{kind}]]: trigger type `{kind}` is not supported by this \
                             host (only `http`)"
                        );
                    }
                    let Value::Array(items) = value else {
                        bail!("`trigger.http` must be an array of tables ([[trigger.http]])");
                    };
                    for (i, item) in items.iter().enumerate() {
                        let Value::Table(body) = item else {
                            bail!("`trigger.http` must be an array of tables ([[trigger.http]])");
                        };
                        triggers.push(parse_http_trigger(i, body)?);
                    }
                }
            }
        }
        top.finish()?;

        for trigger in &triggers {
            if !components.contains_key(&trigger.component) {
                bail!(
                    "[[trigger.http]] with route {:?}: `component = {:?}` names no \
                     [component.{}]",
                    trigger.route,
                    trigger.component,
                    trigger.component
                );
            }
        }
        if triggers.is_empty() {
            bail!("no triggers: add at least one [[trigger.http]]");
        }
        for component in components.values() {
            for (name, text) in &component.variables {
                let place = format!("[component.{}] variable `{name}`", component.id);
                let template = crate::variables::Template::parse(text)
                    .map_err(|e| anyhow::anyhow!("{place}: invalid variable template: {e}"))?;
                let unknown = template
                    .references()
                    .find(|r| !variables.contains_key(*r))
                    .map(str::to_string);
                if let Some(unknown) = unknown {
                    bail!(
                        "{place}: invalid variable template: unknown variable {unknown:?} \
                         (declare it under [variables])"
                    );
                }
            }
        }

        Ok(Self {
            path: dir.join("spin.toml"),
            dir: dir.to_path_buf(),
            application,
            variables,
            triggers,
            components,
        })
    }
}

fn parse_application(table: &Table) -> Result<Application> {
    let mut f = Fields::new(table, "[application]");
    let app = Application {
        name: f.required_string("name")?,
        version: f.string("version")?,
        description: f.string("description")?,
        authors: f.string_array("authors")?,
    };
    f.reject_if_set(
        "targets",
        "deployment target checks are a `spin build`/`spin deploy` feature",
    )?;
    f.reject_if_set("trigger", "application-wide trigger settings")?;
    // Settings for external tools: Spin itself ignores them, and so do we.
    let _ = f.table("tool")?;
    f.finish()?;
    Ok(app)
}

fn parse_variable(name: &str, value: &Value) -> Result<VariableDecl> {
    let place = format!("[variables] {name}");
    check_id(name, '_', true)
        .and_then(|()| crate::variables::check_variable_name(name))
        .map_err(|e| anyhow::anyhow!("{place}: invalid variable name: {e}"))?;
    let Value::Table(table) = value else {
        bail!(
            "{place}: must be a table such as `{{ default = \"...\" }}` or `{{ required = true }}`, \
             found {}",
            type_name(value)
        );
    };
    let mut f = Fields::new(table, place.clone());
    let decl = VariableDecl {
        default: f.string("default")?,
        required: f.bool("required")?,
        secret: f.bool("secret")?,
        description: f.string("description")?,
    };
    f.finish()?;
    if decl.required == decl.default.is_some() {
        bail!("{place}: must be `required` OR have a `default`");
    }
    Ok(decl)
}

fn parse_http_trigger(index: usize, table: &Table) -> Result<HttpTrigger> {
    let mut f = Fields::new(table, format!("[[trigger.http]] #{}", index + 1));
    let id = f.string("id")?;
    let route = match f.raw("route") {
        Some(Value::String(route)) => route.clone(),
        Some(Value::Table(_)) => bail!(
            "{}: private routes (`route = {{ private = true }}`) are not supported by this host",
            f.place()
        ),
        Some(other) => bail!(
            "{}: `route` must be a string, found {}",
            f.place(),
            type_name(other)
        ),
        None => bail!("{}: missing required field `route`", f.place()),
    };
    let place = format!("[[trigger.http]] route {route:?}");
    let component = match f.raw("component") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Table(_)) => bail!(
            "{place}: inline components (`component = {{ ... }}`) are not supported by this host: \
             define a [component.<id>] and reference it by id"
        ),
        Some(other) => bail!(
            "{place}: `component` must be a string, found {}",
            type_name(other)
        ),
        None if f.raw("static_response").is_some() => {
            bail!("{place}: `static_response` is not supported by this host")
        }
        None => bail!("{place}: missing required field `component`"),
    };
    f.reject_if_set("static_response", "static responses")?;
    f.reject_if_set("components", "reserved for future use in Spin")?;
    if let Some(executor) = f.raw("executor") {
        let kind = executor
            .as_table()
            .and_then(|t| t.get("type"))
            .and_then(Value::as_str);
        let plain_http = matches!(kind, Some("http" | "spin"))
            && executor.as_table().is_some_and(|t| t.len() == 1);
        if !plain_http {
            bail!(
                "{place}: `executor = {executor}` is not supported by this host (only \
                 wasi:http components; Wagi is not implemented)"
            );
        }
    }
    f.finish()?;
    Ok(HttpTrigger {
        id,
        route,
        component,
    })
}

fn parse_component(id: &str, table: &Table, dir: &Path) -> Result<Component> {
    let place = format!("[component.{id}]");
    let mut f = Fields::new(table, place.clone());
    let source = match f.raw("source") {
        Some(Value::String(path)) => dir.join(path),
        Some(Value::Table(t)) if t.contains_key("url") => bail!(
            "{place}: `source = {{ url = ... }}` (remote Wasm) is not supported by this host: \
             download the file and use a local path"
        ),
        Some(Value::Table(_)) => bail!(
            "{place}: `source` from a registry is not supported by this host: use a local path"
        ),
        Some(other) => bail!(
            "{place}: `source` must be a path string, found {}",
            type_name(other)
        ),
        None => bail!("{place}: missing required field `source`"),
    };
    let description = f.string("description")?;
    let key_value_stores = f.string_array("key_value_stores")?;
    for label in &key_value_stores {
        if check_id(label, '-', false).is_err() && check_id(label, '_', false).is_err() {
            bail!("{place}: `key_value_stores`: label {label:?} must be kebab-case or snake_case");
        }
    }
    let variables: BTreeMap<String, String> = f.string_map("variables")?.into_iter().collect();
    for name in variables.keys() {
        check_id(name, '_', true)
            .and_then(|()| crate::variables::check_variable_name(name))
            .map_err(|e| anyhow::anyhow!("{place}: `variables`: invalid variable name: {e}"))?;
    }
    let environment = f.string_map("environment")?.into_iter().collect();
    if let Some(hosts) = f.raw("allowed_outbound_hosts") {
        match hosts {
            Value::Array(items) if items.is_empty() => {}
            Value::Array(_) => bail!(
                "{place}: `allowed_outbound_hosts` must be empty: outbound network access is not \
                 supported by this host"
            ),
            other => bail!(
                "{place}: `allowed_outbound_hosts` must be an array, found {}",
                type_name(other)
            ),
        }
    }
    f.reject_if_set("allowed_http_hosts", "outbound HTTP")?;
    f.reject_if_set("files", "mounting files into components")?;
    f.reject_if_set("exclude_files", "mounting files into components")?;
    f.reject_if_set("sqlite_databases", "the SQLite API")?;
    f.reject_if_set("ai_models", "the Serverless AI API")?;
    reject_dependencies(&mut f)?;
    f.reject_if_set("profile", "build profiles")?;
    // `spin up` never builds: the build settings are for `spin build`.
    if let Some(build) = f.raw("build") {
        if !build.is_table() {
            bail!(
                "{place}: `build` must be a table, found {}",
                type_name(build)
            );
        }
    }
    // Settings for external tools: Spin itself ignores them, and so do we.
    let _ = f.table("tool")?;
    f.finish()?;
    Ok(Component {
        id: id.to_string(),
        source,
        description,
        key_value_stores,
        variables,
        environment,
    })
}

/// Spin's component dependencies (`[component.NAME.dependencies]`, and
/// `dependencies_inherit_configuration`): Spin composes the named
/// components into this one at load time; this host runs a component as
/// it is.
fn reject_dependencies(f: &mut Fields<'_>) -> Result<()> {
    for key in ["dependencies", "dependencies_inherit_configuration"] {
        if f.is_set(key) {
            bail!(
                "{}: `{key}`: component dependencies are not supported by this host \
                 (compose the dependencies into the component beforehand)",
                f.place()
            );
        }
    }
    Ok(())
}

/// Spin's identifier rule (`spin_serde::Id`): words of ASCII letters and
/// digits joined by `delim`; each word starts with a letter (later words may
/// start with a digit) and is all lower-case or all upper-case; `lower`
/// additionally forbids upper-case words.
pub fn check_id(id: &str, delim: char, lower: bool) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty".into());
    }
    let wrong = if delim == '_' { '-' } else { '_' };
    if id.contains(wrong) {
        return Err(format!(
            "words must be separated with {delim:?}, not {wrong:?}"
        ));
    }
    for (i, word) in id.split(delim).enumerate() {
        let mut chars = word.chars();
        let Some(first) = chars.next() else {
            return Err(format!("{delim:?}-separated words must not be empty"));
        };
        if !(first.is_ascii_alphabetic() || (i > 0 && first.is_ascii_digit())) {
            return Err(format!(
                "{delim:?}-separated words must start with an ASCII letter or digit; got {first:?}"
            ));
        }
        let upper = first.is_ascii_uppercase();
        for ch in chars {
            if ch.is_ascii_digit() {
                continue;
            }
            if !ch.is_ascii_alphanumeric() {
                return Err(format!(
                    "{delim:?}-separated words may only contain alphanumeric ASCII; got {ch:?}"
                ));
            }
            if ch.is_ascii_uppercase() != upper {
                return Err(format!(
                    "{delim:?}-separated words must be all lowercase or all UPPERCASE; got {word:?}"
                ));
            }
        }
        if lower && upper {
            return Err(format!(
                "lower-case identifiers must be all lowercase; got {id:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
spin_manifest_version = 2

[application]
name = "probe"
version = "0.1.0"
description = "test app"
authors = ["someone <a@b.c>"]

[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }

[[trigger.http]]
route = "/..."
component = "probe"

[component.probe]
source = "target/wasm32-wasip2/release/probe.wasm"
description = "the probe"
key_value_stores = ["default", "my_store", "other-store"]
allowed_outbound_hosts = []
environment = { RUST_LOG = "info" }
[component.probe.variables]
greeting = "{{ greeting }}"
[component.probe.build]
command = "cargo build --target wasm32-wasip2 --release"
watch = ["src/**/*.rs"]
"#;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, Path::new("/app"))
    }

    fn rejects(text: &str, needle: &str) {
        let err = format!("{:#}", parse(text).expect_err("should be rejected"));
        assert!(
            err.contains(needle),
            "error {err:?} should mention {needle:?}"
        );
    }

    /// `GOOD` with `line` added to the `[component.probe]` table.
    fn with_component_line(line: &str) -> String {
        GOOD.replace(
            "allowed_outbound_hosts = []\n",
            &format!("allowed_outbound_hosts = []\n{line}\n"),
        )
    }

    #[test]
    fn accepts_the_supported_subset() {
        let m = parse(GOOD).unwrap();
        assert_eq!(m.application.name, "probe");
        assert_eq!(m.application.version.as_deref(), Some("0.1.0"));
        assert_eq!(m.triggers.len(), 1);
        assert_eq!(m.triggers[0].route, "/...");
        let c = &m.components["probe"];
        assert_eq!(
            c.source,
            Path::new("/app/target/wasm32-wasip2/release/probe.wasm")
        );
        assert_eq!(c.key_value_stores, ["default", "my_store", "other-store"]);
        assert_eq!(c.variables["greeting"], "{{ greeting }}");
        assert_eq!(c.environment["RUST_LOG"], "info");
        assert_eq!(m.variables["greeting"].default.as_deref(), Some("hello"));
        assert!(m.variables["api_key"].required && m.variables["api_key"].secret);
    }

    #[test]
    fn rejects_manifest_version_1() {
        rejects(
            &GOOD.replace("spin_manifest_version = 2", "spin_manifest_version = \"1\""),
            "version 1",
        );
        rejects(
            &GOOD.replace("spin_manifest_version = 2", "spin_version = \"1\""),
            "spin_version",
        );
        rejects(
            &GOOD.replace("spin_manifest_version = 2", ""),
            "spin_manifest_version",
        );
    }

    #[test]
    fn rejects_unknown_keys_everywhere() {
        rejects(&format!("bogus = 1\n{GOOD}"), "`bogus`");
        rejects(
            &GOOD.replace("name = \"probe\"", "name = \"probe\"\ncolour = \"red\""),
            "[application]: unknown field `colour`",
        );
        rejects(
            &with_component_line("colour = \"red\""),
            "[component.probe]: unknown field `colour`",
        );
        rejects(
            &GOOD.replace(
                "component = \"probe\"",
                "component = \"probe\"\nmethod = \"GET\"",
            ),
            "unknown field `method`",
        );
        rejects(
            &GOOD.replace(
                "{ default = \"hello\" }",
                "{ default = \"hello\", colour = 1 }",
            ),
            "unknown field `colour`",
        );
    }

    #[test]
    fn rejects_unsupported_component_features() {
        for (line, field) in [
            ("files = [\"static/**\"]", "files"),
            ("sqlite_databases = [\"default\"]", "sqlite_databases"),
            ("ai_models = [\"llama2-chat\"]", "ai_models"),
            ("exclude_files = [\"x\"]", "exclude_files"),
            (
                "allowed_http_hosts = [\"example.com\"]",
                "allowed_http_hosts",
            ),
        ] {
            rejects(
                &with_component_line(line),
                &format!("`{field}` is not supported"),
            );
        }
        rejects(
            &GOOD.replace(
                "allowed_outbound_hosts = []",
                "allowed_outbound_hosts = [\"https://example.com\"]",
            ),
            "allowed_outbound_hosts",
        );
        // Empty lists are harmless and accepted.
        parse(&with_component_line("files = []\nsqlite_databases = []")).unwrap();
    }

    #[test]
    fn rejects_non_local_sources() {
        rejects(
            &GOOD.replace(
                "source = \"target/wasm32-wasip2/release/probe.wasm\"",
                "source = { url = \"https://example.com/a.wasm\", digest = \"sha256:00\" }",
            ),
            "source = { url",
        );
        rejects(
            &GOOD.replace(
                "source = \"target/wasm32-wasip2/release/probe.wasm\"",
                "source = { registry = \"ttl.sh\", package = \"a:b\", version = \"1.0.0\" }",
            ),
            "registry",
        );
    }

    #[test]
    fn rejects_inline_components_and_private_routes() {
        rejects(
            &GOOD.replace(
                "component = \"probe\"",
                "component = { source = \"x.wasm\" }",
            ),
            "inline components",
        );
        rejects(
            &GOOD.replace("route = \"/...\"", "route = { private = true }"),
            "private routes",
        );
    }

    #[test]
    fn rejects_other_trigger_types() {
        rejects(
            &format!("{GOOD}\n[[trigger.redis]]\nchannel = \"x\"\ncomponent = \"probe\"\n"),
            "trigger type `redis` is not supported",
        );
    }

    #[test]
    fn rejects_trigger_naming_undefined_component() {
        rejects(
            &GOOD.replace("component = \"probe\"", "component = \"nope\""),
            "names no [component.nope]",
        );
    }

    #[test]
    fn rejects_invalid_variable_names() {
        rejects(
            &GOOD.replace("greeting = { default", "Greeting = { default"),
            "invalid variable name",
        );
        rejects(
            &GOOD.replace("greeting = { default", "greet-ing = { default"),
            "invalid variable name",
        );
        rejects(
            &GOOD.replace("greeting = \"{{ greeting }}\"", "bad__name = \"x\""),
            "invalid variable name",
        );
    }

    #[test]
    fn rejects_required_and_default_together_or_neither() {
        rejects(
            &GOOD.replace(
                "{ default = \"hello\" }",
                "{ default = \"hello\", required = true }",
            ),
            "must be `required` OR have a `default`",
        );
        rejects(
            &GOOD.replace("{ default = \"hello\" }", "{ secret = true }"),
            "must be `required` OR have a `default`",
        );
    }

    #[test]
    fn rejects_templates_naming_undefined_variables() {
        rejects(
            &GOOD.replace("\"{{ greeting }}\"", "\"{{ nope }}\""),
            "unknown variable \"nope\"",
        );
        rejects(
            &GOOD.replace("\"{{ greeting }}\"", "\"{{ greeting\""),
            "unmatched",
        );
    }

    #[test]
    fn rejects_bad_ids_and_labels() {
        rejects(
            &GOOD.replace("[component.probe]", "[component.Pro_be]"),
            "invalid component id",
        );
        rejects(
            &GOOD.replace("\"my_store\"", "\"b@dlabel\""),
            "kebab-case or snake_case",
        );
    }

    #[test]
    fn ids_follow_spin() {
        check_id("probe", '-', false).unwrap();
        check_id("my-component2", '-', false).unwrap();
        check_id("a-1b", '-', false).unwrap();
        check_id("my_var", '_', true).unwrap();
        assert!(check_id("1abc", '-', false).is_err());
        assert!(check_id("a--b", '-', false).is_err());
        assert!(check_id("a_b", '-', false).is_err());
        assert!(check_id("aBc", '-', false).is_err());
        assert!(check_id("ABC", '_', true).is_err());
        check_id("ABC", '_', false).unwrap();
    }
}
