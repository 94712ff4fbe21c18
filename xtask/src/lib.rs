//! The library half of xtask: code the workspace's own checks share.
//!
//! - [`openapi`]: a validator for the subset of OpenAPI v3 structural schemas
//!   that Kubernetes CustomResourceDefinitions use, so the SpinKube manifests
//!   in `deploy/spinkube/` can be checked against SpinKube's SpinApp CRD
//!   without a cluster: Kubernetes' extensions translated into JSON Schema
//!   for the `jsonschema` crate.
//! - [`pattern`]: CRD `pattern`s with RE2's meaning, on the `regex` crate.
//! - [`yaml`]: reading Kubernetes manifests (multi-document YAML) into the
//!   validator's [`openapi::Value`] (serde_json's), plus a lint for the
//!   scalars Kubernetes' YAML 1.1 reader types differently from a YAML 1.2
//!   one.
//!
//! The binary (`cargo xtask …`, `src/main.rs`) does not use it; the tests in
//! `xtask/tests/` do.

pub mod openapi;
pub mod pattern;
pub mod yaml;
