//! Two builds shrinking one component at once (two `cargo xtask up` in one
//! checkout): `cargo xtask shrink FILE` run twice at the same time, in two
//! processes, on a fresh component, must leave it valid and shrunk once.
//!
//! Needs Binaryen's `wasm-opt`, as every build does (`cargo xtask shrink`
//! installs it when it may, and otherwise names the package).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use wasm_encoder::{
    CodeSection, Component, ComponentNameSection, ExportKind, ExportSection, Function,
    FunctionSection, Module, ModuleSection, TypeSection, ValType,
};
use wasmparser::{Parser, Payload};

/// The custom section `src/shrink.rs` marks a shrunk component with.
const SHRUNK_MARKER: &str = "shrunk-by-xtask";

/// How many fresh components are shrunk, two processes each: a race lost
/// once in a few tries is still caught.
const ROUNDS: usize = 12;

/// A component holding one core module whose exported function carries the
/// redundancy `wasm-opt -Oz` removes (a copy through a local, an addition
/// of zero, nops and an empty block), and wit-component's debug names.
fn tiny_component() -> Vec<u8> {
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 0);
    let mut body = Function::new([(1, ValType::I32)]);
    body.instructions()
        .nop()
        .local_get(0)
        .local_set(1)
        .block(wasm_encoder::BlockType::Empty)
        .nop()
        .end()
        .local_get(1)
        .i32_const(0)
        .i32_add()
        .nop()
        .end();
    let mut code = CodeSection::new();
    code.function(&body);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&exports)
        .section(&code);

    let mut names = ComponentNameSection::new();
    names.component("tiny");
    let mut component = Component::new();
    component.section(&ModuleSection(&module));
    component.section(&names);
    component.finish()
}

/// What the shrink's result is made of: its core modules' bytes, the names
/// of every custom section (the modules' included), and the modules'
/// exports.
#[derive(Debug, Default)]
struct Contents {
    modules: Vec<Vec<u8>>,
    custom_sections: Vec<String>,
    exports: Vec<String>,
}

fn contents(component: &[u8]) -> Contents {
    let mut found = Contents::default();
    for payload in Parser::new(0).parse_all(component) {
        match payload.expect("the component parses") {
            Payload::ModuleSection {
                unchecked_range, ..
            } => found.modules.push(component[unchecked_range].to_vec()),
            Payload::CustomSection(section) => found.custom_sections.push(section.name().into()),
            Payload::ExportSection(section) => {
                for export in section {
                    found.exports.push(export.unwrap().name.into());
                }
            }
            _ => {}
        }
    }
    found
}

fn shrink_in_background(file: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("shrink")
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting `xtask shrink`")
}

fn assert_succeeded(child: Child, round: usize) {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "round {round}: `xtask shrink` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn two_shrinks_of_one_file_at_once_both_succeed_and_shrink_it_once() {
    let original = tiny_component();
    wasmparser::Validator::new()
        .validate_all(&original)
        .expect("the test's component is valid");
    let before = contents(&original);
    assert_eq!(before.modules.len(), 1);
    assert!(before
        .custom_sections
        .contains(&"component-name".to_owned()));

    for round in 0..ROUNDS {
        let directory = tempfile::tempdir().unwrap();
        let file = directory.path().join("tiny.wasm");
        fs::write(&file, &original).unwrap();

        let (first, second) = (shrink_in_background(&file), shrink_in_background(&file));
        assert_succeeded(first, round);
        assert_succeeded(second, round);

        let shrunk = fs::read(&file).unwrap();
        wasmparser::Validator::new()
            .validate_all(&shrunk)
            .unwrap_or_else(|err| panic!("round {round}: the result does not validate: {err}"));
        let after = contents(&shrunk);
        let markers = after
            .custom_sections
            .iter()
            .filter(|name| *name == SHRUNK_MARKER)
            .count();
        assert_eq!(markers, 1, "round {round}: {:?}", after.custom_sections);
        assert!(
            !after.custom_sections.contains(&"component-name".to_owned()),
            "round {round}: the debug names are still there"
        );
        assert_eq!(after.modules.len(), 1);
        assert!(
            after.modules[0].len() < before.modules[0].len(),
            "round {round}: the module was not optimised ({} bytes, {} before)",
            after.modules[0].len(),
            before.modules[0].len()
        );
        assert_eq!(after.exports, before.exports, "round {round}");

        // Nothing of either process is left beside the component (but the
        // lock file, if any), and a third shrink finds the marker and stops.
        let left: Vec<String> = fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "tiny.wasm.lock")
            .collect();
        assert_eq!(left, ["tiny.wasm"], "round {round}");
        assert_succeeded(shrink_in_background(&file), round);
        assert_eq!(fs::read(&file).unwrap(), shrunk, "round {round}");
    }
}
