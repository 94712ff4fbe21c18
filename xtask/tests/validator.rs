//! The validator's parts on their own: the `pattern` matcher, each schema
//! keyword, the CRD-level checks (apiVersion, kind, metadata) and the YAML
//! reader. `spinkube.rs` uses them on the real CRD and manifests.

use serde_json::json;
use xtask::openapi::{Crd, Schema, Value};
use xtask::pattern::Pattern;
use xtask::yaml::{parse_documents, yaml11_booleans};

fn yaml(text: &str) -> Value {
    let mut documents = parse_documents(text).unwrap();
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn schema(text: &str) -> Schema {
    Schema::compile(&yaml(text)).unwrap_or_else(|errors| panic!("{errors:?}"))
}

/// `value` (YAML) fails `schema` with an error at `path` containing `message`.
fn rejects(schema: &Schema, value: &str, path: &str, message: &str) {
    let errors = schema.validate(&yaml(value));
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.message.contains(message)),
        "{value}: expected `{path}: …{message}…`, got {errors:?}"
    );
}

fn accepts(schema: &Schema, value: &str) {
    assert_eq!(schema.validate(&yaml(value)), vec![], "{value}");
}

/// Kubernetes' resource.Quantity pattern, as the SpinApp CRD has it.
const QUANTITY: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

#[test]
fn pattern_quantity() {
    let p = Pattern::new(QUANTITY).unwrap();
    for ok in [
        "1", "500m", "256Mi", "1.5", ".5", "+1e3", "-2E-1", "1Gi", "0", "1k", "2.",
    ] {
        assert!(p.is_match(ok), "{ok} should match");
    }
    for bad in [
        "", "256MB", "abc", "1.5.5", "Mi", "1 Gi", "1ki", "e3", "1e", "1Gi ",
    ] {
        assert!(!p.is_match(bad), "{bad} should not match");
    }
}

#[test]
fn pattern_condition_fields() {
    let reason = Pattern::new("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$").unwrap();
    assert!(reason.is_match("A"));
    assert!(reason.is_match("MinimumReplicasAvailable"));
    assert!(reason.is_match("a,b:c_"));
    assert!(!reason.is_match("a,"));
    assert!(!reason.is_match("1a"));
    assert!(!reason.is_match(""));
    let kind = Pattern::new(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    .unwrap();
    assert!(kind.is_match("Ready"));
    assert!(kind.is_match("core.spinkube.dev/Available"));
    assert!(!kind.is_match("Core.dev/Ready"));
    assert!(!kind.is_match("/Ready"));
    assert!(!kind.is_match("Ready-"));
}

#[test]
fn pattern_search_classes_and_backtracking() {
    let p = Pattern::new(r"b[^x-z\d]+c").unwrap();
    assert!(p.is_match("aabqqcdd"), "unanchored, as RE2's MatchString");
    assert!(!p.is_match("abxc"));
    assert!(!p.is_match("ab1c"));
    let p = Pattern::new("^(a|ab)(c|bcd)$").unwrap();
    assert!(
        p.is_match("abcd"),
        "needs backtracking into the first group"
    );
    let p = Pattern::new("^(a*)+b$").unwrap();
    assert!(p.is_match("b"));
    assert!(p.is_match("aaab"));
    assert!(!p.is_match("aaa"));
    let p = Pattern::new("^[-a]+$").unwrap();
    assert!(p.is_match("-a-"));
    let p = Pattern::new("^[]a]$").unwrap();
    assert!(p.is_match("]"));
    let p = Pattern::new(r"^\w+\.\s?$").unwrap();
    assert!(p.is_match("a_1. "));
    assert!(!p.is_match("a-1."));
}

/// What RE2 refuses (look-around, back-references, unbalanced groups and
/// classes, a repetition of nothing) is refused.
#[test]
fn pattern_refuses_what_re2_refuses() {
    for source in ["(?=a)", "(?<=a)b", r"(a)\1", "(a", "a)", "*a", "[a"] {
        assert!(Pattern::new(source).is_err(), "{source} should be refused");
    }
}

/// What RE2 accepts beyond the first hand-written matcher's subset
/// (counted repetition, flags, POSIX and Unicode classes, lazy
/// quantifiers, negated Perl classes in brackets) now matches as in RE2.
#[test]
fn pattern_has_the_rest_of_re2() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("^a{2}$", &["aa"], &["a", "aaa"]),
        ("^(?i)ab$", &["AB", "aB"], &["ba"]),
        ("^[[:alpha:]]+$", &["abZ"], &["ab1"]),
        (r"^\p{L}$", &["é", "a"], &["1"]),
        ("^a*?b$", &["aab", "b"], &["aa"]),
        (r"^[\D]$", &["x"], &["1"]),
    ];
    for (source, matching, not_matching) in cases {
        let p = Pattern::new(source).unwrap();
        for text in *matching {
            assert!(p.is_match(text), "{source} should match {text:?}");
        }
        for text in *not_matching {
            assert!(!p.is_match(text), "{source} should not match {text:?}");
        }
    }
}

#[test]
fn schema_keywords_the_crd_uses() {
    let s = schema(
        r#"
type: object
required: [n]
properties:
  n: {type: integer, format: int32, minimum: 0}
  big: {type: integer, format: int64}
  e: {type: string, enum: ["True", "False", "Unknown"]}
  q:
    anyOf: [{type: integer}, {type: string}]
    pattern: "^[0-9]+m?$"
    x-kubernetes-int-or-string: true
  z: {type: string, nullable: true}
  short: {type: string, minLength: 1, maxLength: 3}
  t: {type: string, format: date-time}
  m: {type: object, additionalProperties: {type: string}}
  l:
    type: array
    minItems: 1
    items: {type: boolean}
    x-kubernetes-list-type: atomic
  ref:
    type: object
    x-kubernetes-map-type: atomic
    required: [key]
    properties:
      key: {type: string}
      name: {type: string, default: ""}
  free: {type: object, x-kubernetes-preserve-unknown-fields: true}
  flag: {type: boolean, default: false, description: "ignored"}
"#,
    );
    accepts(
        &s,
        r#"{n: 3, big: 9000000000, e: "True", q: 5, z: null, short: "abc",
            t: "2026-12-01T21:48:26.5+01:00", m: {any: thing}, l: [true],
            ref: {key: k}, free: {whatever: [1]}, flag: false}"#,
    );
    accepts(&s, r#"{n: 0, q: "10m", t: "2016-12-31T23:59:60Z"}"#);
    rejects(&s, "{}", "", "missing required field `n`");
    rejects(&s, "{n: -1}", "n", "less than the minimum");
    rejects(&s, "{n: 2147483648}", "n", "does not fit in int32");
    rejects(
        &s,
        "{n: 1, big: 9223372036854775808}",
        "big",
        "does not fit in int64",
    );
    rejects(&s, "{n: 1.5}", "n", "expected integer, found number");
    rejects(&s, "{n: \"1\"}", "n", "expected integer, found string");
    rejects(&s, "{n: 1, e: Maybe}", "e", "is not one of");
    rejects(
        &s,
        "{n: 1, e: true}",
        "e",
        "expected string, found boolean true (quote it)",
    );
    rejects(&s, "{n: 1, q: 10Mi}", "q", "does not match the pattern");
    rejects(&s, "{n: 1, q: true}", "q", "an integer or a string");
    rejects(&s, "{n: 1, short: \"\"}", "short", "shorter than 1");
    rejects(&s, "{n: 1, short: abcd}", "short", "longer than 3");
    for bad in [
        "2026-12-01",
        "2026-12-01 21:48:26Z",
        "2026-13-01T21:48:26Z",
        "2026-12-01T21:48:26",
        "2026-12-01T21:48:26.Z",
        "2026-12-01T21:48:26+0100",
    ] {
        rejects(
            &s,
            &format!("{{n: 1, t: \"{bad}\"}}"),
            "t",
            "not an RFC 3339 date-time",
        );
    }
    rejects(&s, "{n: 1, m: {a: 1}}", "m.a", "expected string");
    rejects(&s, "{n: 1, l: []}", "l", "at least 1");
    rejects(&s, "{n: 1, l: [x]}", "l[0]", "expected boolean");
    rejects(
        &s,
        "{n: 1, l: {a: true}}",
        "l",
        "expected array, found object",
    );
    rejects(
        &s,
        "{n: 1, ref: {name: a}}",
        "ref",
        "missing required field `key`",
    );
    rejects(
        &s,
        "{n: 1, ref: {key: a, namespace: b}}",
        "ref",
        "unknown field `namespace`",
    );
    rejects(&s, "{n: null}", "n", "null is not allowed");
    rejects(&s, "{n: 1, x: y}", "", "unknown field `x`");
    // An object whose schema declares no fields: the API server would prune
    // them; here that is a mistake.
    let bare = schema("{type: object, properties: {o: {type: object}}}");
    rejects(&bare, "{o: {a: 1}}", "o", "declares no fields");
}

#[test]
fn schema_refuses_keywords_it_does_not_implement() {
    for (text, path) in [
        (
            "{type: object, properties: {a: {type: string, x-kubernetes-validations: []}}}",
            "/properties/a/x-kubernetes-validations",
        ),
        ("{type: string, format: uuid}", "/format"),
        (
            "{type: array, x-kubernetes-list-type: set}",
            "/x-kubernetes-list-type",
        ),
        ("{oneOf: []}", "/oneOf"),
        ("{type: string, pattern: \"(?=a)\"}", "/pattern"),
        ("{type: null}", "/type"),
        ("{type: string, minLength: -1}", "/minLength"),
        ("{type: object, required: [1]}", "/required/0"),
        ("{type: object, properties: {a: 1}}", "/properties/a"),
    ] {
        let errors = Schema::compile(&yaml(text)).unwrap_err();
        assert!(
            errors.iter().any(|e| e.path == path),
            "{text}: expected an error at {path}, got {errors:?}"
        );
    }
}

fn tiny_crd() -> Crd {
    Crd::from_value(&yaml(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: example.dev
  names: {kind: Thing}
  versions:
  - name: v1
    served: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec: {type: object, properties: {size: {type: integer}}}
  - name: v0
    served: false
    schema:
      openAPIV3Schema: {type: object}
"#,
    ))
    .unwrap()
}

#[test]
fn crd_checks_api_version_kind_and_metadata() {
    let crd = tiny_crd();
    assert_eq!(crd.api_versions(), vec!["example.dev/v1".to_owned()]);
    let good = "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a.b-c, namespace: ns, labels: {x: y}}, spec: {size: 1}}";
    assert_eq!(crd.validate(&yaml(good)), vec![]);
    for (text, path, message) in [
        (
            "{apiVersion: example.dev/v0, kind: Thing, metadata: {name: a}}",
            "apiVersion",
            "expected one of example.dev/v1",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Other, metadata: {name: a}}",
            "kind",
            "expected \"Thing\"",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing}",
            "",
            "missing required field `metadata`",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {}}",
            "metadata",
            "missing required field `name`",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: A}}",
            "metadata.name",
            "RFC 1123 subdomain",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a..b}}",
            "metadata.name",
            "RFC 1123 subdomain",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a, namespace: a.b}}",
            "metadata.namespace",
            "RFC 1123 label",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a, labels: {x: 1}}}",
            "metadata.labels.x",
            "expected string",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a, uid: u}}",
            "metadata",
            "server-managed field `uid`",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a}, spec: {size: big}}",
            "spec.size",
            "expected integer",
        ),
        (
            "{apiVersion: example.dev/v1, kind: Thing, metadata: {name: a}, extra: 1}",
            "",
            "unknown field `extra`",
        ),
    ] {
        let errors = crd.validate(&yaml(text));
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.message.contains(message)),
            "{text}: expected `{path}: …{message}…`, got {errors:?}"
        );
    }
    assert!(Crd::from_value(&yaml("{apiVersion: v1, kind: ConfigMap}")).is_err());
}

#[test]
fn yaml_documents_and_types() {
    let docs = parse_documents(
        "---\na: 1\nb: \"1\"\nc: 1.5\nd: true\ne: yes\nf: ~\n---\n# nothing\n---\n- x\n",
    )
    .unwrap();
    assert_eq!(docs.len(), 2, "the empty document is skipped");
    let first = &docs[0];
    assert_eq!(first.get("a"), Some(&json!(1)));
    assert_eq!(first.get("b"), Some(&Value::String("1".into())));
    assert_eq!(first.get("c"), Some(&json!(1.5)));
    assert_eq!(first.get("d"), Some(&Value::Bool(true)));
    // YAML 1.2: a string here, a boolean to Kubernetes; see yaml11_booleans.
    assert_eq!(first.get("e"), Some(&Value::String("yes".into())));
    assert_eq!(first.get("f"), Some(&Value::Null));
    // YAML 1.1 merge keys, which Kubernetes' reader applies.
    let merged = parse_documents("base: &b {x: 1, y: 2}\nc: {<<: *b, y: 3}\n").unwrap();
    assert_eq!(merged[0].get("c"), Some(&json!({"x": 1, "y": 3})));
    assert!(parse_documents("1: a\n").is_err(), "non-string key");
    assert!(parse_documents("a: !custom b\n").is_err(), "tag");
    assert!(parse_documents("a: [\n").is_err(), "syntax");
    assert!(parse_documents("a: 1\na: 2\n").is_err(), "duplicate key");
}

#[test]
fn yaml11_boolean_lint() {
    let text = "\
a: yes
b: \"yes\"
c: 'on'
d: [\"x\", no]
e: yesterday # on
f: \"a: on\"
g:
  - off
  - - Y
h: off # comment
i: {k: On}
yes: 1
j: |
  - yes
k: [a,
  n]
l: !!str off
";
    assert!(parse_documents(text).is_ok(), "the text is valid YAML");
    assert_eq!(
        yaml11_booleans(text),
        vec![
            (1, "yes".to_owned()),
            (4, "no".to_owned()),
            (8, "off".to_owned()),
            (9, "Y".to_owned()),
            (10, "off".to_owned()),
            // What a line-by-line reading missed: a flow mapping's value, a
            // key, an item on the next line of a flow list.
            (11, "On".to_owned()),
            (12, "yes".to_owned()),
            (16, "n".to_owned()),
        ]
    );
}
