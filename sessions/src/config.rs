//! What a [`crate::Sessions`] is configured with, and reading it from
//! Spin variables (or any other lookup).

use spin_sessions_core::manager::DEFAULT_MAX_SESSIONS;
use spin_sessions_core::{CookieConfig, ExpiryPolicy, SameSite, Secure};

/// Everything sessions can be configured with. `Config::default()` is a
/// sound start: one hour idle, one day at most, 100 000 sessions, a
/// `session` cookie that is `HttpOnly`, `SameSite=Lax` and `Secure` over
/// https, and no key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Idle and absolute timeouts.
    pub expiry: ExpiryPolicy,
    /// The cap on stored sessions; creating one more evicts those that
    /// expire soonest.
    pub max_sessions: u64,
    /// The session cookie's name and attributes.
    pub cookie: CookieConfig,
    /// Put before every key the sessions write, so that several
    /// applications can share one store (`"shop/"`, say).
    pub key_prefix: String,
    /// At most this many new sessions per client address and minute; more
    /// get [`crate::Error::RateLimited`] (429) and store nothing. 0: no
    /// quota.
    pub new_sessions_per_minute: u64,
    /// A session used within this many seconds is never evicted to make
    /// room under the cap; when nothing else can go, creation gets
    /// [`crate::Error::Full`] (503) and the sessions in use keep working.
    pub protection_window_secs: u64,
    /// The request header that carries the client's address when a trusted
    /// reverse proxy sets it (`x-forwarded-for`, say; its last address is
    /// taken, the one the proxy added). `None`: the address Spin saw
    /// (`spin-client-addr`). Never trust a header no proxy of yours
    /// overwrites: clients could then pick their address.
    pub client_address_header: Option<String>,
    /// Allow state-changing requests from other origins of the same site
    /// (`Sec-Fetch-Site: same-site`, subdomains). Off: only the same
    /// origin.
    pub allow_same_site_requests: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            expiry: ExpiryPolicy::default(),
            max_sessions: DEFAULT_MAX_SESSIONS,
            cookie: CookieConfig::default(),
            key_prefix: String::new(),
            new_sessions_per_minute: DEFAULT_NEW_SESSIONS_PER_MINUTE,
            protection_window_secs: DEFAULT_PROTECTION_WINDOW_SECS,
            client_address_header: None,
            allow_same_site_requests: false,
        }
    }
}

/// A setting whose value is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// Its value, as given.
    pub value: String,
    /// What was expected instead.
    pub expected: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid variable {} = {:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

impl std::error::Error for ConfigError {}

/// The default quota of new sessions per client address and minute: far
/// more than a person creates, far fewer than a script would.
pub const DEFAULT_NEW_SESSIONS_PER_MINUTE: u64 = 30;

/// The default protection window: ten minutes.
pub const DEFAULT_PROTECTION_WINDOW_SECS: u64 = 600;

/// Ten years: a timeout past this is surely a typo.
const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 86_400;

/// The variables [`Config::from_lookup`] reads, each with what it sets.
pub const VARIABLES: &[(&str, &str)] = &[
    (
        "idle_timeout_secs",
        "a session unused this long ends (3600)",
    ),
    (
        "absolute_timeout_secs",
        "a session ends this long after its creation (86400)",
    ),
    ("max_sessions", "the cap on stored sessions (100000)"),
    ("cookie_name", "the cookie's name (session)"),
    ("cookie_path", "its Path (/)"),
    ("cookie_domain", "its Domain (none)"),
    ("cookie_same_site", "strict, lax or none (lax)"),
    ("cookie_secure", "auto, always or never (auto)"),
    (
        "cookie_max_age_secs",
        "Max-Age; 0 ends it with the browser session (0)",
    ),
    ("key_prefix", "put before every stored key (empty)"),
    (
        "new_sessions_per_minute",
        "new sessions per client address and minute; 0 = no quota (30)",
    ),
    (
        "protection_window_secs",
        "sessions used this recently are never evicted (600)",
    ),
    (
        "client_address_header",
        "header a trusted proxy puts the client's address in (none)",
    ),
    (
        "allow_same_site_requests",
        "accept form posts from other origins of the same site: true or false (false)",
    ),
];

impl Config {
    /// Reads the settings through `lookup`, which returns a variable's
    /// value or `None` when it is not set; unset variables keep
    /// [`Config::default`]'s values. A value that does not parse is an
    /// error naming the variable and the value: a typo must never quietly
    /// fall back to a default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Config::default();
        let read = Reader { lookup: &lookup };
        let timeout = |variable, default| {
            read.number(
                variable,
                default,
                1,
                MAX_TIMEOUT_SECS,
                "a whole number of seconds from 1 to 315360000",
            )
        };
        let expiry = ExpiryPolicy {
            idle_timeout_secs: timeout("idle_timeout_secs", defaults.expiry.idle_timeout_secs)?,
            absolute_timeout_secs: timeout(
                "absolute_timeout_secs",
                defaults.expiry.absolute_timeout_secs,
            )?,
        };
        let max_sessions = read.number(
            "max_sessions",
            defaults.max_sessions,
            1,
            u64::MAX,
            "a whole number of sessions, 1 or more",
        )?;
        let config = Config {
            expiry,
            max_sessions,
            cookie: read.cookie(defaults.cookie)?,
            key_prefix: read.text("key_prefix").unwrap_or(defaults.key_prefix),
            new_sessions_per_minute: read.number(
                "new_sessions_per_minute",
                defaults.new_sessions_per_minute,
                0,
                u64::MAX,
                "a whole number of sessions, 0 for no quota",
            )?,
            protection_window_secs: read.number(
                "protection_window_secs",
                defaults.protection_window_secs,
                0,
                MAX_TIMEOUT_SECS,
                "a whole number of seconds from 0 to 315360000",
            )?,
            client_address_header: read.header_name("client_address_header")?,
            allow_same_site_requests: read.choice(
                "allow_same_site_requests",
                defaults.allow_same_site_requests,
                &[("true", true), ("false", false)],
            )?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks what would make the sessions unusable: cookie settings that
    /// browsers refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cookie.validate().map_err(|err| ConfigError {
            variable: "cookie_name",
            value: self.cookie.name.clone(),
            expected: err.0,
        })
    }
}

/// Reads typed values through a lookup.
struct Reader<'a, F> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn text(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable).map(|v| v.trim().to_owned())
    }

    fn number(
        &self,
        variable: &'static str,
        default: u64,
        min: u64,
        max: u64,
        expected: &str,
    ) -> Result<u64, ConfigError> {
        let Some(raw) = (self.lookup)(variable) else {
            return Ok(default);
        };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ConfigError {
                variable,
                value: raw,
                expected: expected.to_owned(),
            }),
        }
    }

    /// An HTTP header name, lower-cased; empty is none.
    fn header_name(&self, variable: &'static str) -> Result<Option<String>, ConfigError> {
        let Some(raw) = self.text(variable).filter(|name| !name.is_empty()) else {
            return Ok(None);
        };
        match http::HeaderName::from_bytes(raw.as_bytes()) {
            Ok(name) => Ok(Some(name.as_str().to_owned())),
            Err(_) => Err(ConfigError {
                variable,
                value: raw,
                expected: "an HTTP header name, such as x-forwarded-for".to_owned(),
            }),
        }
    }

    fn choice<T: Copy>(
        &self,
        variable: &'static str,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(raw) = self.text(variable) else {
            return Ok(default);
        };
        options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&raw))
            .map(|(_, value)| *value)
            .ok_or_else(|| ConfigError {
                variable,
                value: raw,
                expected: format!(
                    "one of {}",
                    options
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    fn cookie(&self, defaults: CookieConfig) -> Result<CookieConfig, ConfigError> {
        let max_age = self.number(
            "cookie_max_age_secs",
            defaults.max_age_secs.unwrap_or(0),
            0,
            MAX_TIMEOUT_SECS,
            "a whole number of seconds from 0 (browser-session cookie) to 315360000",
        )?;
        Ok(CookieConfig {
            name: self.text("cookie_name").unwrap_or(defaults.name),
            path: self.text("cookie_path").unwrap_or(defaults.path),
            domain: self
                .text("cookie_domain")
                .filter(|d| !d.is_empty())
                .or(defaults.domain),
            same_site: self.choice(
                "cookie_same_site",
                defaults.same_site,
                &[
                    ("strict", SameSite::Strict),
                    ("lax", SameSite::Lax),
                    ("none", SameSite::None),
                ],
            )?,
            secure: self.choice(
                "cookie_secure",
                defaults.secure,
                &[
                    ("auto", Secure::Auto),
                    ("always", Secure::Always),
                    ("never", Secure::Never),
                ],
            )?,
            max_age_secs: (max_age > 0).then_some(max_age),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_set_is_the_default() {
        assert_eq!(config(&[]).unwrap(), Config::default());
        let d = Config::default();
        assert_eq!(d.expiry.idle_timeout_secs, 3600);
        assert_eq!(d.expiry.absolute_timeout_secs, 86_400);
        assert_eq!(d.max_sessions, 100_000);
        assert_eq!(d.cookie.max_age_secs, None);
    }

    #[test]
    fn every_variable_is_read() {
        let c = config(&[
            ("idle_timeout_secs", "60"),
            ("absolute_timeout_secs", " 120 "),
            ("max_sessions", "100"),
            ("cookie_name", "__Host-app"),
            ("cookie_path", "/"),
            ("cookie_same_site", "Strict"),
            ("cookie_secure", "always"),
            ("cookie_max_age_secs", "600"),
            ("key_prefix", "shop/"),
            ("new_sessions_per_minute", "5"),
            ("protection_window_secs", "120"),
            ("client_address_header", "X-Forwarded-For"),
            ("allow_same_site_requests", "true"),
        ])
        .unwrap();
        assert_eq!(c.expiry.idle_timeout_secs, 60);
        assert_eq!(c.expiry.absolute_timeout_secs, 120);
        assert_eq!(c.max_sessions, 100);
        assert_eq!(c.cookie.name, "__Host-app");
        assert_eq!(c.cookie.same_site, SameSite::Strict);
        assert_eq!(c.cookie.secure, Secure::Always);
        assert_eq!(c.cookie.max_age_secs, Some(600));
        assert_eq!(c.key_prefix, "shop/");
        assert_eq!(c.new_sessions_per_minute, 5);
        assert_eq!(c.protection_window_secs, 120);
        assert_eq!(c.client_address_header.as_deref(), Some("x-forwarded-for"));
        assert!(c.allow_same_site_requests);
        let d = config(&[("cookie_domain", "example.com"), ("cookie_path", "/app")]).unwrap();
        assert_eq!(d.cookie.domain.as_deref(), Some("example.com"));
        assert_eq!(d.cookie.path, "/app");
        // Every listed variable is one that is read: setting it alone
        // changes the result.
        for (name, _) in VARIABLES {
            assert_ne!(config(&[(name, "x\u{1}")]), Ok(Config::default()), "{name}");
        }
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (variable, value) in [
            ("idle_timeout_secs", "abc"),
            ("idle_timeout_secs", "0"),
            ("idle_timeout_secs", "-5"),
            ("absolute_timeout_secs", "1e3"),
            ("absolute_timeout_secs", "999999999999"),
            ("cookie_max_age_secs", "soon"),
            ("cookie_secure", "yes"),
            ("cookie_same_site", "loose"),
            ("max_sessions", "0"),
            ("max_sessions", "lots"),
            ("cookie_name", "a b"),
            ("cookie_name", "__Host-x"),
            ("new_sessions_per_minute", "-1"),
            ("protection_window_secs", "forever"),
            ("client_address_header", "x forwarded"),
            ("allow_same_site_requests", "maybe"),
        ] {
            let pairs = [(variable, value), ("cookie_path", "/x")];
            let pairs = if variable == "cookie_name" {
                &pairs[..]
            } else {
                &pairs[..1]
            };
            let err = config(pairs).unwrap_err();
            assert_eq!(err.variable, variable);
            let message = err.to_string();
            assert!(
                message.contains(variable) && message.contains(value),
                "{message}"
            );
        }
    }
}
