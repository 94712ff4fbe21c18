//! Spin's runtime configuration file (`--runtime-config-file`) and the
//! resolution of key-value store locations.
//!
//! Supported: `[key_value_store.<label>]` with `type = "spin"` (SQLite) and
//! an optional `path`, or `type = "redis"` and a required `url`, and the
//! top-level `state_dir`. Resolution follows
//! Spin (crates/runtime-config, crates/key-value-spin):
//! - a relative `path` is relative to the runtime config file's directory;
//! - a `type = "spin"` store without `path` is an in-memory database;
//! - the `default` store, unless configured, is
//!   `<state-dir>/sqlite_key_value.db`, or in memory when the state
//!   directory is unset (`state_dir = ""`);
//! - the state directory is `--state-dir`, else the file's `state_dir`, else
//!   `.spin` beside the manifest; a given relative state directory is
//!   relative to the current directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use toml::{Table, Value};

use crate::kv::redis::RedisUrl;
use crate::kv::sqlite::DbLocation;
use crate::toml_fields::{type_name, Fields};

/// The label of the store every app has.
pub const DEFAULT_STORE: &str = "default";
/// The default store's file name inside the state directory.
pub const DEFAULT_STORE_FILE: &str = "sqlite_key_value.db";
/// The state directory's name beside the manifest.
pub const DEFAULT_STATE_DIR: &str = ".spin";

/// How one store is backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// `type = "spin"`: SQLite at this location.
    Sqlite(DbLocation),
    /// `type = "redis"`: the Redis server at this URL.
    Redis(RedisUrl),
}

impl StoreConfig {
    /// The store's `type` as the runtime config names it.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Sqlite(_) => "spin",
            StoreConfig::Redis(_) => "redis",
        }
    }
}

/// A parsed runtime config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `[key_value_store.<label>]`, already resolved.
    pub stores: BTreeMap<String, StoreConfig>,
    /// The top-level `state_dir`: `Some("")` means "unset" as in Spin.
    pub state_dir: Option<String>,
}

/// Top-level sections Spin understands but this host does not implement.
const SPIN_ONLY_SECTIONS: &[(&str, &str)] = &[
    ("sqlite_database", "the SQLite API"),
    ("llm_compute", "the Serverless AI API"),
    (
        "variables_provider",
        "variable providers other than the environment",
    ),
    (
        "variable_provider",
        "variable providers other than the environment",
    ),
    (
        "config_provider",
        "variable providers other than the environment",
    ),
    ("client_tls", "outbound TLS settings"),
    ("outbound_networking", "outbound networking settings"),
    ("blob_store", "the blob store API"),
    ("otel", "OpenTelemetry settings"),
    (
        "log_dir",
        "component log files: guest output goes to the host's stderr",
    ),
];

impl RuntimeConfig {
    /// Reads and validates the runtime config file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime config file \"{}\"", path.display()))?;
        let dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Self::parse(&text, &dir)
            .with_context(|| format!("invalid runtime config file \"{}\"", path.display()))
    }

    /// Validates runtime config text; relative store paths resolve against
    /// `dir` (the file's directory).
    pub fn parse(text: &str, dir: &Path) -> Result<Self> {
        let doc: Table = toml::from_str(text).context("not valid TOML")?;
        let mut top = Fields::new(&doc, "runtime config");
        for (section, what) in SPIN_ONLY_SECTIONS {
            if top.raw(section).is_some() {
                bail!("`{section}` is not supported by this host ({what})");
            }
        }
        let state_dir = top.string("state_dir")?;
        let mut stores = BTreeMap::new();
        if let Some(table) = top.table("key_value_store")? {
            for (label, value) in table {
                let Value::Table(body) = value else {
                    bail!(
                        "[key_value_store.{label}] must be a table, found {}",
                        type_name(value)
                    );
                };
                stores.insert(label.clone(), parse_store(label, body, dir)?);
            }
        }
        top.finish()?;
        Ok(Self { stores, state_dir })
    }
}

fn parse_store(label: &str, table: &Table, dir: &Path) -> Result<StoreConfig> {
    let place = format!("[key_value_store.{label}]");
    let mut f = Fields::new(table, place.clone());
    let kind = f.required_string("type")?;
    match kind.as_str() {
        "spin" => {
            let location = match f.string("path")? {
                Some(path) if path.is_empty() => bail!("{place}: `path` must not be empty"),
                Some(path) => DbLocation::File(dir.join(path)),
                None => DbLocation::InMemory,
            };
            f.finish()?;
            Ok(StoreConfig::Sqlite(location))
        }
        "redis" => {
            // Spin's only field for this type; a missing one is an error
            // there too.
            let url = f.required_string("url")?;
            // The URL is not echoed: it may carry a password.
            let url =
                RedisUrl::parse(&url).with_context(|| format!("{place}: invalid Redis `url`"))?;
            f.finish()?;
            Ok(StoreConfig::Redis(url))
        }
        "azure_cosmos" | "aws_dynamo" => bail!(
            "{place}: key-value store type `{kind}` is not supported by this host (only \
             `type = \"spin\"` and `type = \"redis\"`)"
        ),
        other => bail!("{place}: unknown key-value store type `{other}`"),
    }
}

/// The state directory, following Spin's precedence. `None` means unset:
/// the default store is then in memory.
pub fn resolve_state_dir(
    cli: Option<&Path>,
    config: Option<&RuntimeConfig>,
    manifest_dir: &Path,
) -> Result<Option<PathBuf>> {
    let given = match cli {
        Some(path) => Some(path.to_path_buf()),
        None => config.and_then(|c| c.state_dir.as_ref()).map(PathBuf::from),
    };
    match given {
        Some(path) if path.as_os_str().is_empty() => Ok(None),
        Some(path) => Ok(Some(std::path::absolute(&path).with_context(|| {
            format!("invalid state directory \"{}\"", path.display())
        })?)),
        None => Ok(Some(manifest_dir.join(DEFAULT_STATE_DIR))),
    }
}

/// Every store the app can use, by label: the configured ones plus
/// `default`.
pub fn resolve_stores(
    config: Option<&RuntimeConfig>,
    state_dir: Option<&Path>,
) -> BTreeMap<String, StoreConfig> {
    let mut stores = config.map(|c| c.stores.clone()).unwrap_or_default();
    stores.entry(DEFAULT_STORE.to_string()).or_insert_with(|| {
        StoreConfig::Sqlite(match state_dir {
            Some(dir) => DbLocation::File(dir.join(DEFAULT_STORE_FILE)),
            None => DbLocation::InMemory,
        })
    });
    stores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeConfig> {
        RuntimeConfig::parse(text, Path::new("/etc/app"))
    }

    fn rejects(text: &str, needle: &str) {
        let err = format!("{:#}", parse(text).expect_err("should be rejected"));
        assert!(
            err.contains(needle),
            "error {err:?} should mention {needle:?}"
        );
    }

    #[test]
    fn spin_stores_resolve_like_spin() {
        let rc = parse(
            r#"
            [key_value_store.default]
            type = "spin"
            path = "data/kv.db"
            [key_value_store.abs]
            type = "spin"
            path = "/var/kv.db"
            [key_value_store.mem]
            type = "spin"
            "#,
        )
        .unwrap();
        assert_eq!(
            rc.stores["default"],
            StoreConfig::Sqlite(DbLocation::File("/etc/app/data/kv.db".into()))
        );
        assert_eq!(
            rc.stores["abs"],
            StoreConfig::Sqlite(DbLocation::File("/var/kv.db".into()))
        );
        assert_eq!(rc.stores["mem"], StoreConfig::Sqlite(DbLocation::InMemory));
        // The configured default replaces the state-dir default.
        let all = resolve_stores(Some(&rc), Some(Path::new("/app/.spin")));
        assert_eq!(all.len(), 3);
        assert_eq!(all["default"], rc.stores["default"]);
    }

    #[test]
    fn default_store_lives_in_the_state_dir() {
        let all = resolve_stores(None, Some(Path::new("/app/.spin")));
        assert_eq!(
            all["default"],
            StoreConfig::Sqlite(DbLocation::File("/app/.spin/sqlite_key_value.db".into()))
        );
        let all = resolve_stores(None, None);
        assert_eq!(all["default"], StoreConfig::Sqlite(DbLocation::InMemory));
    }

    #[test]
    fn state_dir_precedence() {
        let manifest_dir = Path::new("/app");
        assert_eq!(
            resolve_state_dir(None, None, manifest_dir).unwrap(),
            Some(PathBuf::from("/app/.spin"))
        );
        let rc = parse("state_dir = \"/srv/state\"").unwrap();
        assert_eq!(
            resolve_state_dir(None, Some(&rc), manifest_dir).unwrap(),
            Some(PathBuf::from("/srv/state"))
        );
        assert_eq!(
            resolve_state_dir(Some(Path::new("/cli")), Some(&rc), manifest_dir).unwrap(),
            Some(PathBuf::from("/cli"))
        );
        let unset = parse("state_dir = \"\"").unwrap();
        assert_eq!(
            resolve_state_dir(None, Some(&unset), manifest_dir).unwrap(),
            None
        );
        let relative = resolve_state_dir(Some(Path::new("rel")), None, manifest_dir)
            .unwrap()
            .unwrap();
        assert_eq!(relative, std::env::current_dir().unwrap().join("rel"));
    }

    #[test]
    fn redis_stores_take_a_url() {
        let rc = parse(
            r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://:secret@127.0.0.1:6380/2"
            [key_value_store.local]
            type = "redis"
            url = "redis+unix:///run/redis.sock"
            "#,
        )
        .unwrap();
        let StoreConfig::Redis(url) = &rc.stores["default"] else {
            panic!("{:?}", rc.stores["default"]);
        };
        assert_eq!(url.addr(), "127.0.0.1:6380");
        // Shown as Spin shows it, and never with the password.
        assert_eq!(url.to_string(), "Redis at 127.0.0.1:6380");
        assert!(!format!("{:?}", rc.stores).contains("secret"));
        assert_eq!(rc.stores["default"].kind(), "redis");
        assert!(matches!(rc.stores["local"], StoreConfig::Redis(_)));
        // A configured Redis default replaces the SQLite default.
        let all = resolve_stores(Some(&rc), Some(Path::new("/app/.spin")));
        assert_eq!(all["default"], rc.stores["default"]);
    }

    #[test]
    fn rejects_bad_redis_stores() {
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\n",
            "missing required field `url`",
        );
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\nurl = 6379\n",
            "`url`",
        );
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"\"\n",
            "invalid Redis `url`",
        );
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"http://127.0.0.1:6379\"\n",
            "invalid Redis `url`",
        );
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"not a url\"\n",
            "invalid Redis `url`",
        );
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"rediss://127.0.0.1\"\n",
            "invalid Redis `url`",
        );
        rejects(
            "[key_value_store.x]\ntype = \"redis\"\nurl = \"redis://h\"\npath = \"a.db\"\n",
            "unknown field `path`",
        );
    }

    #[test]
    fn rejects_other_store_types() {
        for kind in ["azure_cosmos", "aws_dynamo"] {
            rejects(
                &format!("[key_value_store.x]\ntype = \"{kind}\"\nurl = \"redis://h\"\n"),
                "not supported by this host",
            );
        }
        rejects(
            "[key_value_store.x]\ntype = \"etcd\"\n",
            "unknown key-value store type",
        );
        rejects(
            "[key_value_store.x]\npath = \"a.db\"\n",
            "missing required field `type`",
        );
    }

    #[test]
    fn rejects_unknown_keys_and_other_sections() {
        rejects(
            "[key_value_store.x]\ntype = \"spin\"\ncolour = \"red\"\n",
            "unknown field `colour`",
        );
        rejects("baz = \"/baz\"\n", "unknown field `baz`");
        rejects(
            "[sqlite_database.default]\ntype = \"spin\"\n",
            "`sqlite_database` is not supported",
        );
        rejects(
            "[[variables_provider]]\ntype = \"vault\"\n",
            "`variables_provider` is not supported",
        );
        rejects("log_dir = \"/logs\"\n", "`log_dir` is not supported");
    }
}
