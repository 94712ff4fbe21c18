//! Application variables and `fermyon:spin/variables@2.0.0`.
//!
//! Follows Spin's model: the manifest declares app variables (a default or
//! `required = true`); each component maps its own variable names to
//! templates such as `"{{ name }}"`; values come from Spin's environment
//! provider (`SPIN_VARIABLE_<NAME>` upper-cased) and fall back to the
//! declared default. A component only sees its own variables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{bail, Context as _};

use crate::bindings::fermyon::spin::variables as wit;
use crate::kv::OpCounters;

/// The prefix of Spin's environment-variable provider.
pub const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// An application variable as declared in `[variables]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableDecl {
    /// The value used when no provider supplies one.
    pub default: Option<String>,
    /// Whether a provider must supply a value.
    pub required: bool,
    /// Whether the value is sensitive (never printed by this host).
    pub secret: bool,
    /// Free text from the manifest.
    pub description: Option<String>,
}

/// Checks a variable name against Spin's rules (`spin_expressions::Key`):
/// lower-case ASCII letters, digits and single underscores, starting with a
/// letter and not ending with an underscore. The error text names the
/// problem, like Spin's.
pub fn check_variable_name(name: &str) -> Result<(), String> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_string())
    } else if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        Some(format!(
            "invalid character {bad:?}. Variable names may contain only lower-case letters, numbers, and underscores."
        ))
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        Some("must start with a lowercase ASCII letter".to_string())
    } else if !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric() {
        Some("must end with a lowercase ASCII letter or digit".to_string())
    } else if name.contains("__") {
        Some("must not contain multiple consecutive underscores".to_string())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(format!("{name:?}: {reason}")),
        None => Ok(()),
    }
}

/// A component variable's value: literal text with `{{ variable }}`
/// references to application variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(String),
}

impl Template {
    /// Parses `text` the way Spin does: `{{` opens an expression that runs
    /// to the next `}}` and is trimmed; everything else is literal.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after_open) = rest.strip_prefix("{{") {
                let Some((expr, after)) = after_open.split_once("}}") else {
                    return Err("unmatched '{{' in template".to_string());
                };
                parts.push(Part::Var(expr.trim().to_string()));
                rest = after;
            } else {
                let end = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Lit(rest[..end].to_string()));
                rest = &rest[end..];
            }
        }
        Ok(Self { parts })
    }

    /// The application variables the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(name) => Some(name.as_str()),
            Part::Lit(_) => None,
        })
    }

    fn render(&self, values: &HashMap<String, String>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(name) => match values.get(name) {
                    Some(value) => out.push_str(value),
                    // Templates are checked at startup, so this is a host bug.
                    None => return Err(format!("invalid variable name: {name}")),
                },
            }
        }
        Ok(out)
    }
}

/// Where variable values come from: Spin's environment provider.
#[derive(Debug, Clone)]
pub enum EnvSource {
    /// The host process's environment, read at startup.
    Process,
    /// A fixed list of `(NAME, value)` pairs, standing in for the process
    /// environment (tests).
    Fixed(Vec<(String, String)>),
}

impl EnvSource {
    fn lookup(&self, env_name: &str) -> anyhow::Result<Option<String>> {
        match self {
            EnvSource::Process => match std::env::var(env_name) {
                Ok(value) => Ok(Some(value)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(e) => Err(e).with_context(|| format!("failed to resolve env var {env_name}")),
            },
            EnvSource::Fixed(pairs) => Ok(pairs
                .iter()
                .rev()
                .find(|(name, _)| name == env_name)
                .map(|(_, value)| value.clone())),
        }
    }
}

/// The environment variable Spin's env provider reads for `name`.
pub fn env_var_name(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// Every component's variables, resolved once at startup.
#[derive(Debug, Default)]
pub struct Resolver {
    values: HashMap<String, String>,
    components: HashMap<String, BTreeMap<String, Template>>,
}

/// Why `variables.get` failed; the cases of the WIT `error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarError {
    /// The requested name is not a valid variable name.
    InvalidName(String),
    /// The component has no variable of that name.
    Undefined(String),
    /// The provider failed.
    Provider(String),
    /// Anything else.
    Other(String),
}

impl Resolver {
    /// Resolves the application variables against `env` and checks every
    /// component template. Errors name the variable or component at fault.
    pub fn new(
        declared: &BTreeMap<String, VariableDecl>,
        components: impl IntoIterator<Item = (String, BTreeMap<String, String>)>,
        env: &EnvSource,
    ) -> anyhow::Result<Self> {
        let mut values = HashMap::new();
        for (name, decl) in declared {
            check_variable_name(name).map_err(|e| anyhow::anyhow!("invalid variable name: {e}"))?;
            let env_name = env_var_name(name);
            let value = match env.lookup(&env_name)? {
                Some(value) => value,
                None => match &decl.default {
                    Some(default) => default.clone(),
                    None => bail!(
                        "variable `{name}` is required but has no value: set the environment \
                         variable {env_name}"
                    ),
                },
            };
            values.insert(name.clone(), value);
        }
        let mut resolved = HashMap::new();
        for (component, vars) in components {
            let mut templates = BTreeMap::new();
            for (key, text) in vars {
                check_variable_name(&key).map_err(|e| {
                    anyhow::anyhow!("component `{component}`: invalid variable name: {e}")
                })?;
                let template = Template::parse(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "component `{component}`: variable `{key}`: invalid variable template: {e}"
                    )
                })?;
                if let Some(unknown) = template.references().find(|r| !declared.contains_key(*r)) {
                    bail!(
                        "component `{component}`: variable `{key}`: invalid variable template: \
                         unknown variable {unknown:?} (declare it under [variables])"
                    );
                }
                templates.insert(key, template);
            }
            resolved.insert(component, templates);
        }
        Ok(Self {
            values,
            components: resolved,
        })
    }

    /// `variables.get(name)` as seen by `component`, with Spin's errors.
    pub fn get(&self, component: &str, name: &str) -> Result<String, VarError> {
        check_variable_name(name).map_err(VarError::InvalidName)?;
        let templates = self.components.get(component).ok_or_else(|| {
            VarError::Undefined(format!("no variable for component {component:?}"))
        })?;
        let template = templates.get(name).ok_or_else(|| {
            VarError::Undefined(format!("no variable for {component:?}.{name:?}"))
        })?;
        template.render(&self.values).map_err(VarError::Other)
    }
}

/// The per-instance state behind `fermyon:spin/variables`.
pub struct VariablesHost {
    resolver: Arc<Resolver>,
    component: Arc<str>,
    counters: Arc<OpCounters>,
}

impl VariablesHost {
    /// Variables as seen by `component`; every get is counted in
    /// `counters`.
    pub fn new(resolver: Arc<Resolver>, component: Arc<str>, counters: Arc<OpCounters>) -> Self {
        Self {
            resolver,
            component,
            counters,
        }
    }
}

impl wit::Host for VariablesHost {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, wit::Error>> {
        // Counted whatever the outcome, like the key-value calls.
        self.counters.record_var_read();
        Ok(self
            .resolver
            .get(&self.component, &name)
            .map_err(|e| match e {
                VarError::InvalidName(m) => wit::Error::InvalidName(m),
                VarError::Undefined(m) => wit::Error::Undefined(m),
                VarError::Provider(m) => wit::Error::Provider(m),
                VarError::Other(m) => wit::Error::Other(m),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decl(default: Option<&str>) -> VariableDecl {
        VariableDecl {
            default: default.map(str::to_string),
            required: default.is_none(),
            secret: false,
            description: None,
        }
    }

    fn resolver(env: EnvSource) -> anyhow::Result<Resolver> {
        let declared = BTreeMap::from([
            ("greeting".to_string(), decl(Some("hello"))),
            ("api_key".to_string(), decl(None)),
        ]);
        let component = BTreeMap::from([
            ("greeting".to_string(), "{{ greeting }}".to_string()),
            (
                "banner".to_string(),
                "<{{greeting}}|{{ api_key }}>".to_string(),
            ),
            ("plain".to_string(), "literal".to_string()),
        ]);
        Resolver::new(&declared, [("probe".to_string(), component)], &env)
    }

    #[test]
    fn names_follow_spins_rules() {
        for good in ["a", "abc", "a1b2c3", "a_1", "a_1_b_3", "greeting"] {
            check_variable_name(good).expect(good);
        }
        for bad in [
            "", "aX", "1bc", "_x", "x.y", "x_", "a__b", "x-y", "Greeting",
        ] {
            check_variable_name(bad).expect_err(bad);
        }
    }

    #[test]
    fn templates_parse_like_spin() {
        let t = Template::parse("a-{{ x }}-b{{y}}").unwrap();
        assert_eq!(t.references().collect::<Vec<_>>(), ["x", "y"]);
        assert!(Template::parse("{{ open").is_err());
        assert_eq!(Template::parse("").unwrap().parts.len(), 0);
    }

    #[test]
    fn default_is_used_without_env() {
        let r = resolver(EnvSource::Fixed(vec![(
            "SPIN_VARIABLE_API_KEY".into(),
            "k".into(),
        )]))
        .unwrap();
        assert_eq!(r.get("probe", "greeting").unwrap(), "hello");
        assert_eq!(r.get("probe", "banner").unwrap(), "<hello|k>");
        assert_eq!(r.get("probe", "plain").unwrap(), "literal");
    }

    #[test]
    fn env_overrides_default() {
        let r = resolver(EnvSource::Fixed(vec![
            ("SPIN_VARIABLE_API_KEY".into(), "k".into()),
            ("SPIN_VARIABLE_GREETING".into(), "bonjour".into()),
        ]))
        .unwrap();
        assert_eq!(r.get("probe", "greeting").unwrap(), "bonjour");
    }

    #[test]
    fn required_without_value_fails_at_startup() {
        let err = resolver(EnvSource::Fixed(vec![])).unwrap_err().to_string();
        assert!(err.contains("api_key"), "{err}");
        assert!(err.contains("SPIN_VARIABLE_API_KEY"), "{err}");
    }

    #[test]
    fn get_errors_match_spin() {
        let r = resolver(EnvSource::Fixed(vec![(
            "SPIN_VARIABLE_API_KEY".into(),
            "k".into(),
        )]))
        .unwrap();
        assert!(matches!(
            r.get("probe", "nope"),
            Err(VarError::Undefined(_))
        ));
        assert!(matches!(
            r.get("probe", "Bad-Name"),
            Err(VarError::InvalidName(_))
        ));
        // The app variable `api_key` is not mapped into the component.
        assert!(matches!(
            r.get("probe", "api_key"),
            Err(VarError::Undefined(_))
        ));
        assert!(matches!(
            r.get("other", "greeting"),
            Err(VarError::Undefined(_))
        ));
    }

    #[test]
    fn unknown_template_variable_is_rejected() {
        let declared = BTreeMap::from([("greeting".to_string(), decl(Some("hi")))]);
        let component = BTreeMap::from([("x".to_string(), "{{ missing }}".to_string())]);
        let err = Resolver::new(
            &declared,
            [("probe".to_string(), component)],
            &EnvSource::Fixed(vec![]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing") && err.contains("probe"), "{err}");
    }
}
