//! The HTTP route table, with Spin's route syntax and precedence.
//!
//! Spin (crates/http, via the `routefinder` crate) supports exact routes
//! (`/foo`), named parameters (`/users/:id`) and a trailing wildcard
//! (`/foo/...`, or the older `/foo/*`). When several routes match, the one
//! whose segments are most specific wins, comparing segment by segment:
//! exact text beats a parameter, which beats the wildcard; a route that is a
//! strict prefix of another (e.g. `/one` and `/one/...`) wins over it.
//! Leading and trailing slashes of the request path are ignored when
//! matching, so `/foo/` is served by `/foo`.

use std::cmp::Ordering;
use std::fmt;

use anyhow::{bail, Result};

/// One piece of a parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Exact(String),
    Param(String),
    Wildcard,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Exact(_) => 2,
            Segment::Param(_) => 1,
            Segment::Wildcard => 0,
        }
    }
}

/// What a matching route captured from a path: named parameters, and the
/// wildcard's tail if the route ends in one.
type Captures<'p> = (Vec<(String, &'p str)>, Option<&'p str>);

/// A route as written in the manifest, parsed.
#[derive(Debug, Clone)]
pub struct Route {
    /// The `route` value as written in the manifest.
    raw: String,
    /// The route after Spin's normalisation: a leading `/` added, one
    /// trailing `/` removed (so `/` becomes the empty string).
    based: String,
    segments: Vec<Segment>,
    component: String,
}

impl Route {
    /// The component that serves this route.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// Whether the route ends in a wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Wildcard))
    }

    /// The route without its wildcard suffix, as `spin up` lists it.
    pub fn prefix(&self) -> &str {
        self.based
            .strip_suffix("/...")
            .or_else(|| self.based.strip_suffix("/*"))
            .unwrap_or(&self.based)
    }

    /// Spin's precedence: exact text > parameter > wildcard, segment by
    /// segment; when one route's segments are a prefix of the other's, the
    /// shorter route comes first.
    fn precedence(&self, other: &Route) -> Ordering {
        for (mine, theirs) in self.segments.iter().zip(&other.segments) {
            match theirs.rank().cmp(&mine.rank()) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        self.segments.len().cmp(&other.segments.len())
    }

    /// Matches `path` (the request's path, without the query), returning the
    /// named parameters and the wildcard's capture.
    fn matches<'p>(&self, path: &'p str) -> Option<Captures<'p>> {
        let mut rest = path.trim_start_matches('/').trim_end_matches('/');
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                // Segments are separated by one slash; a wildcard may also
                // match nothing at all (`/one/...` serves `/one`).
                match rest.strip_prefix('/') {
                    Some(after) => rest = after,
                    None if rest.is_empty() && *segment == Segment::Wildcard => {}
                    None => return None,
                }
            }
            match segment {
                Segment::Exact(text) => rest = rest.strip_prefix(text.as_str())?,
                Segment::Param(name) => {
                    let end = rest.find('/').unwrap_or(rest.len());
                    if end == 0 {
                        return None;
                    }
                    params.push((name.clone(), &rest[..end]));
                    rest = &rest[end..];
                }
                Segment::Wildcard => return Some((params, Some(rest))),
            }
        }
        rest.is_empty().then_some((params, None))
    }
}

impl fmt::Display for Route {
    /// The route as `spin up` prints it: the path, or the prefix followed by
    /// ` (wildcard)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_wildcard() {
            write!(f, "{} (wildcard)", self.prefix())
        } else {
            f.write_str(&self.based)
        }
    }
}

/// Parses a manifest route, rejecting what Spin's router rejects and what
/// this host does not support.
pub fn parse_route(raw: &str, component: &str) -> Result<Route> {
    if raw
        .chars()
        .any(|c| c.is_whitespace() || c == '?' || c == '#')
    {
        bail!("route {raw:?}: routes may not contain whitespace, '?' or '#'");
    }
    // Spin's normalisation: make absolute, then strip one trailing slash.
    let absolute = if raw.starts_with('/') {
        raw.to_string()
    } else {
        format!("/{raw}")
    };
    let based = absolute
        .strip_suffix('/')
        .map(str::to_string)
        .unwrap_or(absolute);
    let trimmed = based.trim_start_matches('/').trim_end_matches('/');
    let pieces: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    let mut segments = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let segment = match *piece {
            "" => continue,
            "..." | "*" if last => Segment::Wildcard,
            "*" => bail!("route {raw:?}: a wildcard may only end a route"),
            p if p.starts_with('*') => bail!(
                "route {raw:?}: there can only be one wildcard, it does not take a name: \
                 replace `{p}` with `...`"
            ),
            ":" => bail!("route {raw:?}: parameters must be named (`:name`)"),
            p if p.starts_with(':') => {
                let name = &p[1..];
                if name.contains('.') || name.contains(':') {
                    bail!(
                        "route {raw:?}: a parameter must be a whole path segment \
                         (`{p}` is not supported by this host)"
                    );
                }
                Segment::Param(name.to_string())
            }
            p => Segment::Exact(p.to_string()),
        };
        segments.push(segment);
    }
    // A route of only "/..." or "/*" is the catch-all wildcard.
    if segments.is_empty() && matches!(trimmed, "..." | "*") {
        segments.push(Segment::Wildcard);
    }
    Ok(Route {
        raw: raw.to_string(),
        based,
        segments,
        component: component.to_string(),
    })
}

/// The result of routing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The component to run.
    pub component: String,
    /// `spin-matched-route`: the normalised route, wildcard included.
    pub matched_route: String,
    /// `spin-raw-component-route`: the route exactly as written.
    pub raw_component_route: String,
    /// `spin-component-route`: the raw route without its `/...` suffix.
    pub component_route: String,
    /// `spin-path-info`: the part of the path the wildcard captured, with
    /// Spin's slash conventions; empty for exact routes.
    pub path_info: String,
    /// Named parameters, for the `spin-path-match-<name>` headers.
    pub params: Vec<(String, String)>,
}

/// The route table of an app.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Routes in precedence order (most specific first); ties keep manifest
    /// order.
    routes: Vec<Route>,
}

/// A route that a later trigger with the same route made unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateRoute {
    /// The route, as written.
    pub route: String,
    /// The component that lost it.
    pub replaced: String,
    /// The component that serves it.
    pub effective: String,
}

impl Router {
    /// Builds the table from `(route, component)` pairs in manifest order.
    /// As in Spin, when two triggers share a route the last one wins; the
    /// losers are returned so the caller can report them.
    pub fn build<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Self, Vec<DuplicateRoute>)> {
        let mut routes: Vec<Route> = Vec::new();
        let mut duplicates = Vec::new();
        for (raw, component) in entries {
            let route = parse_route(raw, component)?;
            if let Some(existing) = routes.iter_mut().find(|r| r.raw == route.raw) {
                duplicates.push(DuplicateRoute {
                    route: route.raw.clone(),
                    replaced: existing.component.clone(),
                    effective: route.component.clone(),
                });
                *existing = route;
            } else {
                routes.push(route);
            }
        }
        let mut sorted = routes;
        // Stable sort: equally specific routes keep manifest order.
        sorted.sort_by(Route::precedence);
        Ok((Self { routes: sorted }, duplicates))
    }

    /// The routes, most specific first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route serving `path` (the request path, without query).
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        self.routes.iter().find_map(|route| {
            let (params, wildcard) = route.matches(path)?;
            let path_info = match wildcard {
                None => String::new(),
                // Spin reports the captured tail with a leading slash, and
                // keeps a trailing slash the client sent.
                Some(tail) => match (tail.is_empty(), path.ends_with('/')) {
                    (true, false) => String::new(),
                    (true, true) => "/".to_string(),
                    (false, false) => format!("/{tail}"),
                    (false, true) => format!("/{tail}/"),
                },
            };
            Some(RouteMatch {
                component: route.component.clone(),
                matched_route: route.based.clone(),
                raw_component_route: route.raw.clone(),
                component_route: route
                    .raw
                    .strip_suffix("/...")
                    .unwrap_or(&route.raw)
                    .to_string(),
                path_info,
                params: params
                    .into_iter()
                    .map(|(k, v)| (k, v.to_string()))
                    .collect(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(entries: &[(&str, &str)]) -> Router {
        Router::build(entries.iter().map(|(r, c)| (*r, *c)))
            .unwrap()
            .0
    }

    fn component(r: &Router, path: &str) -> Option<String> {
        r.route(path).map(|m| m.component)
    }

    #[test]
    fn exact_routes() {
        let r = router(&[("/foo", "foo"), ("/foo/bar", "foobar")]);
        assert_eq!(component(&r, "/foo").as_deref(), Some("foo"));
        assert_eq!(component(&r, "/foo/bar").as_deref(), Some("foobar"));
        assert_eq!(component(&r, "/foo/").as_deref(), Some("foo"));
        assert_eq!(component(&r, "/foo/baz"), None);
        assert_eq!(component(&r, "/"), None);
        assert_eq!(component(&r, "/fo"), None);
        assert_eq!(component(&r, "/foox"), None);
    }

    #[test]
    fn catch_all_wildcard() {
        let r = router(&[("/...", "all")]);
        for path in ["/", "/foo/bar", "/abc/", "/this/should/be/captured"] {
            assert_eq!(component(&r, path).as_deref(), Some("all"), "{path}");
        }
        assert_eq!(r.route("/1/2/3").unwrap().path_info, "/1/2/3");
        assert_eq!(r.route("/").unwrap().path_info, "/");
    }

    #[test]
    fn wildcard_path_info_follows_spin() {
        let r = router(&[("/test/...", "c")]);
        assert_eq!(r.route("/test").unwrap().path_info, "");
        assert_eq!(r.route("/test/").unwrap().path_info, "/");
        assert_eq!(r.route("/test/hello").unwrap().path_info, "/hello");
        assert_eq!(r.route("/test/hello/").unwrap().path_info, "/hello/");
        assert_eq!(component(&r, "/testing"), None);
    }

    #[test]
    fn longest_wildcard_wins_regardless_of_order() {
        for entries in [
            [
                ("/one/...", "1"),
                ("/one/two/...", "2"),
                ("/one/two/three/...", "3"),
            ],
            [
                ("/one/two/three/...", "3"),
                ("/one/two/...", "2"),
                ("/one/...", "1"),
            ],
        ] {
            let r = router(&entries);
            assert_eq!(component(&r, "/one/two/three/four").as_deref(), Some("3"));
            assert_eq!(component(&r, "/one/two/x").as_deref(), Some("2"));
            assert_eq!(component(&r, "/one/x").as_deref(), Some("1"));
        }
    }

    #[test]
    fn exact_beats_wildcard_and_param() {
        let r = router(&[("/...", "wild"), ("/:name", "param"), ("/one", "exact")]);
        assert_eq!(component(&r, "/one").as_deref(), Some("exact"));
        assert_eq!(component(&r, "/two").as_deref(), Some("param"));
        assert_eq!(component(&r, "/two/three").as_deref(), Some("wild"));
        assert_eq!(component(&r, "/").as_deref(), Some("wild"));
        let r = router(&[("/one/...", "wild"), ("/one", "exact")]);
        assert_eq!(component(&r, "/one").as_deref(), Some("exact"));
        assert_eq!(component(&r, "/one/x").as_deref(), Some("wild"));
    }

    #[test]
    fn named_parameters_are_captured() {
        let r = router(&[("/1/:two/3", "c")]);
        let m = r.route("/1/2/3").unwrap();
        assert_eq!(m.params, vec![("two".to_string(), "2".to_string())]);
        assert_eq!(m.path_info, "");
        assert!(r.route("/1//3").is_none());
        let r = router(&[("/foo/:userid/...", "c")]);
        let m = r.route("/foo/42/bar").unwrap();
        assert_eq!(m.params, vec![("userid".to_string(), "42".to_string())]);
        assert_eq!(m.path_info, "/bar");
        assert_eq!(m.matched_route, "/foo/:userid/...");
        assert_eq!(m.component_route, "/foo/:userid");
    }

    #[test]
    fn header_values_match_spin() {
        let r = router(&[("/foo/...", "c")]);
        let m = r.route("/foo/bar").unwrap();
        assert_eq!(m.matched_route, "/foo/...");
        assert_eq!(m.raw_component_route, "/foo/...");
        assert_eq!(m.component_route, "/foo");
        assert_eq!(m.path_info, "/bar");
        let r = router(&[("/", "root")]);
        let m = r.route("/").unwrap();
        // Spin strips the trailing slash of the route for the matched route.
        assert_eq!(m.matched_route, "");
        assert_eq!(m.raw_component_route, "/");
        let r = router(&[("/...", "all")]);
        let m = r.route("/x").unwrap();
        assert_eq!(m.component_route, "");
    }

    #[test]
    fn root_route_matches_only_root() {
        let r = router(&[("/", "root")]);
        assert_eq!(component(&r, "/").as_deref(), Some("root"));
        assert_eq!(component(&r, "").as_deref(), Some("root"));
        assert_eq!(component(&r, "/x"), None);
    }

    #[test]
    fn star_suffix_is_a_wildcard() {
        let r = router(&[("/static/*", "files")]);
        assert_eq!(component(&r, "/static/a/b").as_deref(), Some("files"));
        assert_eq!(r.route("/static/a/b").unwrap().path_info, "/a/b");
    }

    #[test]
    fn duplicate_routes_last_one_wins() {
        let (r, dups) = Router::build([("/", "a"), ("/foo", "first"), ("/foo", "second")]).unwrap();
        assert_eq!(component(&r, "/foo").as_deref(), Some("second"));
        assert_eq!(
            dups,
            vec![DuplicateRoute {
                route: "/foo".into(),
                replaced: "first".into(),
                effective: "second".into()
            }]
        );
    }

    #[test]
    fn bad_routes_are_rejected() {
        for bad in ["/a/*/b", "/:", "/*name", "/a b", "/x?y", "/:a.json"] {
            assert!(parse_route(bad, "c").is_err(), "{bad}");
        }
    }

    #[test]
    fn display_matches_spin_up() {
        assert_eq!(parse_route("/...", "c").unwrap().to_string(), " (wildcard)");
        assert_eq!(
            parse_route("/whee/...", "c").unwrap().to_string(),
            "/whee (wildcard)"
        );
        assert_eq!(parse_route("/hello", "c").unwrap().to_string(), "/hello");
        assert_eq!(parse_route("hello/", "c").unwrap().to_string(), "/hello");
    }
}
