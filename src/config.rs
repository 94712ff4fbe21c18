//! The component's settings, read from Spin variables.
//!
//! Each setting has a Spin variable declared in `spin.toml` with its
//! default. A value that does not parse is an error that names the variable
//! and the value (every request then answers 500): a typo must never quietly
//! fall back to a default. A variable the manifest does not declare at all
//! takes the built-in default, the same as the manifest's.

use session_core::ExpiryPolicy;

/// When the session cookie gets the `Secure` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieSecure {
    /// When the request came over https (Spin's `spin-full-url`).
    Auto,
    /// Always; the site is only ever served over https.
    Always,
    /// Never (plain-http development only).
    Never,
}

/// Everything the component can be configured with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Idle and absolute timeouts.
    pub expiry: ExpiryPolicy,
    /// The `Secure` attribute policy.
    pub cookie_secure: CookieSecure,
    /// `Max-Age` of the cookie; `None` (variable 0) for a browser-session cookie.
    pub cookie_max_age_secs: Option<u64>,
    /// The cap on live sessions.
    pub max_sessions: u64,
}

/// A variable whose value is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The Spin variable.
    pub variable: &'static str,
    /// Its value, as given.
    pub value: String,
    /// What was expected instead.
    pub expected: &'static str,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid Spin variable {} = {:?}: expected {}",
            self.variable, self.value, self.expected
        )
    }
}

/// Ten years: a timeout past this is surely a typo.
const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 86_400;

impl Settings {
    /// Reads the settings through `lookup`, which returns a variable's value
    /// or `None` when the manifest does not declare it.
    pub fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let timeout = |variable: &'static str, default: u64| {
            number(
                &lookup,
                variable,
                default,
                1,
                MAX_TIMEOUT_SECS,
                "a whole number of seconds from 1 to 315360000",
            )
        };
        let idle_timeout_secs = timeout("idle_timeout_secs", 3600)?;
        let absolute_timeout_secs = timeout("absolute_timeout_secs", 86_400)?;
        let max_age = number(
            &lookup,
            "cookie_max_age_secs",
            0,
            0,
            MAX_TIMEOUT_SECS,
            "a whole number of seconds from 0 (browser-session cookie) to 315360000",
        )?;
        let max_sessions = number(
            &lookup,
            "max_sessions",
            session_core::manager::DEFAULT_MAX_SESSIONS,
            1,
            u64::MAX,
            "a whole number of sessions, 1 or more",
        )?;
        let cookie_secure = match lookup("cookie_secure").as_deref().map(str::trim) {
            None | Some("auto") => CookieSecure::Auto,
            Some("always") => CookieSecure::Always,
            Some("never") => CookieSecure::Never,
            Some(other) => {
                return Err(ConfigError {
                    variable: "cookie_secure",
                    value: other.to_owned(),
                    expected: "one of auto, always, never",
                })
            }
        };
        Ok(Settings {
            expiry: ExpiryPolicy {
                idle_timeout_secs,
                absolute_timeout_secs,
            },
            cookie_secure,
            cookie_max_age_secs: (max_age > 0).then_some(max_age),
            max_sessions,
        })
    }

    /// Whether this request's cookie gets `Secure`.
    pub fn secure_cookie(&self, request_is_https: bool) -> bool {
        match self.cookie_secure {
            CookieSecure::Auto => request_is_https,
            CookieSecure::Always => true,
            CookieSecure::Never => false,
        }
    }
}

fn number(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: u64,
    min: u64,
    max: u64,
    expected: &'static str,
) -> Result<u64, ConfigError> {
    let Some(raw) = lookup(variable) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError {
            variable,
            value: raw,
            expected,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_variables(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(
            s.expiry,
            ExpiryPolicy {
                idle_timeout_secs: 3600,
                absolute_timeout_secs: 86_400
            }
        );
        assert_eq!(s.cookie_secure, CookieSecure::Auto);
        assert_eq!(s.cookie_max_age_secs, None);
        assert_eq!(s.max_sessions, 100_000);
    }

    #[test]
    fn values() {
        let s = settings(&[
            ("idle_timeout_secs", "60"),
            ("absolute_timeout_secs", " 120 "),
            ("cookie_secure", "always"),
            ("cookie_max_age_secs", "600"),
            ("max_sessions", "100"),
        ])
        .unwrap();
        assert_eq!(s.expiry.idle_timeout_secs, 60);
        assert_eq!(s.expiry.absolute_timeout_secs, 120);
        assert!(s.secure_cookie(false));
        assert_eq!(s.cookie_max_age_secs, Some(600));
        assert_eq!(s.max_sessions, 100);
        assert!(!settings(&[("cookie_secure", "never")])
            .unwrap()
            .secure_cookie(true));
        assert!(settings(&[("cookie_secure", "auto")])
            .unwrap()
            .secure_cookie(true));
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
            ("max_sessions", "0"),
            ("max_sessions", "lots"),
        ] {
            let err = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable, variable);
            assert_eq!(err.value, value);
            let message = err.to_string();
            assert!(
                message.contains(variable) && message.contains(value),
                "{message}"
            );
        }
    }
}
