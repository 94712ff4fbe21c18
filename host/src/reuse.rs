//! Spin's instance-reuse settings for WASI 0.3 components: how many
//! requests one instance serves in all and at once, how long it may sit
//! idle, and how long a request may take to produce its response head.
//!
//! As in Spin (`crates/trigger-http/src/lib.rs`), each setting is a value or
//! a half-open range `a..b`; a range is sampled once per new instance, so
//! different instances of one component may get different limits. WASI 0.2
//! components ignore all four: they get a fresh instance per request.

use std::fmt::Display;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Spin's default `--max-instance-reuse-count` for WASI 0.3 components.
pub const DEFAULT_MAX_INSTANCE_REUSE_COUNT: usize = 128;
/// Spin's default `--max-instance-concurrent-reuse-count` for WASI 0.3.
pub const DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT: usize = 16;
/// Spin's default `--idle-instance-timeout`.
pub const DEFAULT_IDLE_INSTANCE_TIMEOUT: Duration = Duration::from_secs(1);

/// A setting given as one value or as a range sampled per instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range<T> {
    /// Always this value.
    Value(T),
    /// A value drawn uniformly from `start..end` (end excluded, as Spin's
    /// `a..b` is) for each new instance. Never empty: the parsers refuse
    /// `end <= start`.
    Bounds(T, T),
}

impl<T: Copy + PartialOrd + rand::distr::uniform::SampleUniform> Range<T> {
    /// The value for one new instance.
    pub fn sample(&self) -> T {
        match *self {
            Range::Value(value) => value,
            // A fresh generator only for ranges: the default settings are
            // single values and cost nothing per instance.
            Range::Bounds(start, end) => StdRng::from_os_rng().random_range(start..end),
        }
    }
}

/// The four settings, with Spin's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// `--max-instance-reuse-count`: requests one instance accepts in all
    /// before it is dropped (once it has finished them).
    pub max_instance_reuse_count: Range<usize>,
    /// `--max-instance-concurrent-reuse-count`: requests one instance may
    /// have accepted and not yet answered (response head) at once.
    pub max_instance_concurrent_reuse_count: Range<usize>,
    /// `--request-timeout`: how long a request may take to produce its
    /// response head (and an instance its work after the last response);
    /// `None`, Spin's default, is no limit.
    pub request_timeout: Option<Range<Duration>>,
    /// `--idle-instance-timeout`: how long an instance with nothing to do is
    /// kept for the next request.
    pub idle_instance_timeout: Range<Duration>,
}

impl Default for InstanceReuse {
    fn default() -> Self {
        Self {
            max_instance_reuse_count: Range::Value(DEFAULT_MAX_INSTANCE_REUSE_COUNT),
            max_instance_concurrent_reuse_count: Range::Value(
                DEFAULT_MAX_INSTANCE_CONCURRENT_REUSE_COUNT,
            ),
            request_timeout: None,
            idle_instance_timeout: Range::Value(DEFAULT_IDLE_INSTANCE_TIMEOUT),
        }
    }
}

/// The limits of one instance, drawn from [`InstanceReuse`] when it is
/// created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// Requests it accepts in all.
    pub max_reuse: usize,
    /// Requests it may hold unanswered at once.
    pub max_concurrent: usize,
    /// Per request; `Duration::MAX` when there is none.
    pub request_timeout: Duration,
    /// While idle.
    pub idle_timeout: Duration,
}

impl InstanceReuse {
    /// Draws one instance's limits.
    pub fn sample(&self) -> InstanceLimits {
        InstanceLimits {
            max_reuse: self.max_instance_reuse_count.sample(),
            max_concurrent: self.max_instance_concurrent_reuse_count.sample(),
            request_timeout: self
                .request_timeout
                .map_or(Duration::MAX, |range| range.sample()),
            idle_timeout: self.idle_instance_timeout.sample(),
        }
    }
}

/// Parses a value or an `a..b` range with Spin's messages (`parse_one`
/// reads one side); refuses an empty range, which Spin accepts and then
/// panics on when it samples it (see the README's differences).
fn parse_range<T: PartialOrd, E: Display>(
    s: &str,
    parse_one: impl Fn(&str) -> Result<T, E>,
) -> Result<Range<T>, String> {
    let value = |text: &str| {
        parse_one(text).map_err(|e| format!("expected integer or range; got {s:?}; {e}"))
    };
    match s.split_once("..") {
        Some((start, end)) => {
            let (start, end) = (value(start)?, value(end)?);
            if end <= start {
                return Err(format!(
                    "{s:?} is an empty range: its end is excluded, so it must be greater than \
                     its start"
                ));
            }
            Ok(Range::Bounds(start, end))
        }
        None => Ok(Range::Value(value(s)?)),
    }
}

/// A duration as Spin reads one: a number of seconds, or a number with one
/// of the suffixes `s`, `ms`, `us`, `μs`, `ns`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let error = |e: std::num::ParseIntError| {
        format!("expected integer suffixed by `s`, `ms`, `us`, `μs`, or `ns`; got {s:?}; {e}")
    };
    // The order matters as in Spin: `ms`, `us` and `ns` end in `s` too.
    Ok(match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(plain) => {
            if let Some(n) = s.strip_suffix("ms") {
                Duration::from_millis(n.parse().map_err(error)?)
            } else if let Some(n) = s.strip_suffix("us").or(s.strip_suffix("μs")) {
                Duration::from_micros(n.parse().map_err(error)?)
            } else if let Some(n) = s.strip_suffix("ns") {
                Duration::from_nanos(n.parse().map_err(error)?)
            } else if let Some(n) = s.strip_suffix('s') {
                Duration::from_secs(n.parse().map_err(error)?)
            } else {
                return Err(error(plain));
            }
        }
    })
}

/// Parses `--max-instance-reuse-count` and
/// `--max-instance-concurrent-reuse-count`: `N` or `A..B`.
pub fn parse_count_range(s: &str) -> Result<Range<usize>, String> {
    parse_range(s, str::parse::<usize>)
}

/// Parses `--request-timeout` and `--idle-instance-timeout`: a duration or
/// a range of them (`1..8s`: the suffix belongs to each side's number).
pub fn parse_duration_range(s: &str) -> Result<Range<Duration>, String> {
    parse_range(s, parse_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ranges_parse_as_spin_parses_them() {
        assert_eq!(parse_count_range("128"), Ok(Range::Value(128)));
        assert_eq!(parse_count_range("0"), Ok(Range::Value(0)));
        assert_eq!(parse_count_range("1..8"), Ok(Range::Bounds(1, 8)));
        let err = parse_count_range("x").unwrap_err();
        assert_eq!(
            err,
            "expected integer or range; got \"x\"; invalid digit found in string"
        );
        let err = parse_count_range("-1").unwrap_err();
        assert!(
            err.starts_with("expected integer or range; got \"-1\""),
            "{err}"
        );
        let err = parse_count_range("1..").unwrap_err();
        assert!(err.contains("got \"1..\""), "{err}");
        let err = parse_count_range("8..8").unwrap_err();
        assert!(err.contains("\"8..8\" is an empty range"), "{err}");
        assert!(parse_count_range("8..2").is_err());
    }

    #[test]
    fn durations_take_spins_units() {
        let d = |s| parse_duration_range(s).unwrap();
        assert_eq!(d("1"), Range::Value(Duration::from_secs(1)));
        assert_eq!(d("2s"), Range::Value(Duration::from_secs(2)));
        assert_eq!(d("250ms"), Range::Value(Duration::from_millis(250)));
        assert_eq!(d("7us"), Range::Value(Duration::from_micros(7)));
        assert_eq!(d("7μs"), Range::Value(Duration::from_micros(7)));
        assert_eq!(d("9ns"), Range::Value(Duration::from_nanos(9)));
        assert_eq!(
            d("1..8s"),
            Range::Bounds(Duration::from_secs(1), Duration::from_secs(8))
        );
        assert_eq!(
            d("100ms..2s"),
            Range::Bounds(Duration::from_millis(100), Duration::from_secs(2))
        );
        let err = parse_duration_range("1.5s").unwrap_err();
        assert!(
            err.starts_with("expected integer or range; got \"1.5s\"; expected integer suffixed"),
            "{err}"
        );
        assert!(parse_duration_range("5m").is_err());
        assert!(parse_duration_range("2s..1s")
            .unwrap_err()
            .contains("empty range"));
    }

    #[test]
    fn a_range_is_sampled_within_its_half_open_bounds() {
        let range = Range::Bounds(3usize, 6);
        let mut seen = [false; 6];
        for _ in 0..400 {
            let value = range.sample();
            assert!((3..6).contains(&value), "{value}");
            seen[value] = true;
        }
        assert_eq!(seen, [false, false, false, true, true, true]);
        assert_eq!(Range::Value(7usize).sample(), 7);
    }

    #[test]
    fn spins_defaults() {
        let limits = InstanceReuse::default().sample();
        assert_eq!(
            limits,
            InstanceLimits {
                max_reuse: 128,
                max_concurrent: 16,
                request_timeout: Duration::MAX,
                idle_timeout: Duration::from_secs(1),
            }
        );
    }
}
