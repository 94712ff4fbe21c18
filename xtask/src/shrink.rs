//! Shrinking each built component before it ships: `wasm-opt -Oz` over the
//! core module inside it, and its debug names dropped.
//!
//! LLVM's wasm code carries redundant locals, copies and blocks that
//! Binaryen's optimiser removes (about an eighth of the tutorial's code),
//! and wasm-component-ld adds a `component-name` section, names for
//! debuggers only (about 9 KB). Nothing else changes: the component's types,
//! imports, exports and adapter modules are kept byte for byte.
//!
//! wasm-opt reads core modules, not components, so the component's main
//! module is taken out, optimised and put back in its place. That is sound
//! because nothing in a component refers to a module by byte offset, only
//! by index and by the names of its imports and exports, which wasm-opt
//! keeps (it may drop an import nothing calls). The result is checked before
//! it replaces the file: the module's exports must be the ones it had, its
//! imports some of the ones it had, and the whole component must validate.
//!
//! A shrunk component carries a small custom section saying so, so shrinking
//! it again leaves it as it is.
//!
//! Two builds may shrink the same file at once (two `cargo xtask up` in one
//! checkout). Each holds a lock on a file beside the component while it
//! shrinks, so the second waits, then finds the marker and stops; wasm-opt
//! works on files of its own in a fresh temporary directory; and the result
//! replaces the component by an atomic rename, so no reader ever sees half
//! a file.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use wasm_encoder::{ComponentSectionId, CustomSection, RawSection};

/// The custom section that marks a component as already shrunk.
const SHRUNK_MARKER: &str = "shrunk-by-xtask";

/// The length of a component's preamble: the wasm magic, version, layer.
const HEADER_LEN: usize = 8;

/// The debug-names section wasm-component-ld writes.
const COMPONENT_NAMES: &str = "component-name";

/// The WebAssembly features rustc's `wasm32-wasip2` code uses. wasm-opt must
/// be told: stripped modules carry no `target_features` section.
const WASM_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-multivalue",
    "--enable-reference-types",
];

/// Shrinks the component at `path` in place, unless it already is. Safe to
/// run from several processes at once on one file (see the module's doc).
pub fn shrink_component(path: &Path, wasm_opt: &Path) -> Result<()> {
    let _lock = exclusive_lock(
        &path.with_extension("wasm.lock"),
        &format!("another build's shrinking of {}", path.display()),
    )?;
    let original = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let sections = top_level_sections(&original)
        .with_context(|| format!("reading the sections of {}", path.display()))?;
    if sections
        .iter()
        .any(|s| s.custom_name() == Some(SHRUNK_MARKER))
    {
        return Ok(());
    }
    let main = main_module_index(&sections)?;
    let optimised = run_wasm_opt(wasm_opt, sections[main].contents, path)?;
    check_same_interface(sections[main].contents, &optimised)
        .with_context(|| format!("wasm-opt changed the interface of {}", path.display()))?;
    let shrunk = reassemble(&sections, main, &optimised);
    wasmparser::Validator::new()
        .validate_all(&shrunk)
        .with_context(|| format!("the shrunk {} does not validate", path.display()))?;
    replace_atomically(path, &shrunk)
}

/// Holds an exclusive lock on the file at `path` (created if missing) until
/// the returned handle is dropped; says once on stderr that it waits for
/// `holder` when the lock is taken.
pub fn exclusive_lock(path: &Path, holder: &str) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => eprintln!("xtask: waiting for {holder}"),
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(err).with_context(|| format!("locking {}", path.display()))
        }
    }
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Writes `bytes` to a new file beside `path` and renames it over `path`.
/// A rename, not a write in place: readers see the old file or the new one,
/// never a part, and cargo's hard link of its output into `deps/` stays the
/// linker's own.
fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let directory = path.parent().unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".shrunk-")
        .suffix(".wasm")
        .tempfile_in(directory)
        .with_context(|| format!("creating a temporary file in {}", directory.display()))?;
    temporary
        .write_all(bytes)
        .with_context(|| format!("writing {}", temporary.path().display()))?;
    temporary
        .persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Binaryen's `wasm-opt`: the one on `PATH`, else Debian's package
/// (installed when we may, as for the other tools).
pub fn find_wasm_opt() -> Result<PathBuf> {
    if let Some(found) = crate::toolchain::which("wasm-opt") {
        return Ok(found);
    }
    crate::apt::ensure(
        &[("binaryen", "/usr/bin/wasm-opt")],
        "shrinking the components",
        "(or put Binaryen's wasm-opt on PATH another way: `brew install binaryen`, \
         `cargo install wasm-opt`)",
    )?;
    Ok(PathBuf::from("/usr/bin/wasm-opt"))
}

/// One top-level section of a component: its id and contents.
#[derive(Debug, Clone, Copy)]
struct Section<'a> {
    id: u8,
    contents: &'a [u8],
}

const CUSTOM_SECTION: u8 = ComponentSectionId::CoreCustom as u8;
const CORE_MODULE_SECTION: u8 = ComponentSectionId::CoreModule as u8;

impl Section<'_> {
    /// The name of a custom section (None for any other section).
    fn custom_name(&self) -> Option<&str> {
        if self.id != CUSTOM_SECTION {
            return None;
        }
        wasmparser::BinaryReader::new(self.contents, 0)
            .read_string()
            .ok()
    }
}

/// The sections of a component's outermost level, in order. Nested modules
/// and components are single sections here, their contents untouched.
fn top_level_sections(bytes: &[u8]) -> Result<Vec<Section<'_>>> {
    ensure!(
        wasmparser::Parser::is_component(bytes),
        "not a WebAssembly component (header {:02x?})",
        &bytes[..bytes.len().min(HEADER_LEN)]
    );
    let mut reader = wasmparser::BinaryReader::new(&bytes[HEADER_LEN..], HEADER_LEN);
    let mut sections = Vec::new();
    while !reader.eof() {
        let id = reader.read_u8()?;
        let size = reader.read_var_u32()?;
        let contents = reader.read_bytes(size as usize)?;
        sections.push(Section { id, contents });
    }
    Ok(sections)
}

/// The component's own code: its largest core module. wit-component's other
/// modules (the shims that let imports reach the main module's memory and
/// allocator) are a few hundred bytes each.
fn main_module_index(sections: &[Section]) -> Result<usize> {
    sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.id == CORE_MODULE_SECTION)
        .max_by_key(|(_, s)| s.contents.len())
        .map(|(index, _)| index)
        .context("the component holds no core module")
}

/// `wasm-opt -Oz` over one core module, through two files in a temporary
/// directory of this call's own (removed when it returns).
fn run_wasm_opt(wasm_opt: &Path, module: &[u8], component: &Path) -> Result<Vec<u8>> {
    let directory = tempfile::tempdir().context("creating a temporary directory for wasm-opt")?;
    let input = directory.path().join("core.wasm");
    let output = directory.path().join("core-oz.wasm");
    std::fs::write(&input, module).with_context(|| format!("writing {}", input.display()))?;
    let status = Command::new(wasm_opt)
        .arg("-Oz")
        .args(WASM_FEATURES)
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .status()
        .with_context(|| format!("running {}", wasm_opt.display()))?;
    ensure!(
        status.success(),
        "`wasm-opt -Oz` failed on the core module of {} ({status})",
        component.display()
    );
    std::fs::read(&output).context("reading wasm-opt's output")
}

/// A core module's imports (module, name, kind) and exports (name, kind).
type Interface = (Vec<(String, String, String)>, Vec<(String, String)>);

/// Fails unless the optimised module exports the same items, in the same
/// order and of the same kinds, and imports nothing new: the component's
/// canonical functions use those exports by name, and its instantiations
/// provide those imports. wasm-opt may drop an import no code calls (an
/// instantiation may offer more than a module takes); validation then
/// checks the types.
fn check_same_interface(before: &[u8], after: &[u8]) -> Result<()> {
    let (imports_before, exports_before) = interface(before)?;
    let (imports_after, exports_after) = interface(after)?;
    let mut remaining = imports_before.iter();
    for import in &imports_after {
        ensure!(
            remaining.any(|kept| kept == import),
            "it imports {}/{} ({}), which it did not, or not there",
            import.0,
            import.1,
            import.2
        );
    }
    ensure!(exports_before == exports_after, "its exports differ");
    Ok(())
}

fn interface(module: &[u8]) -> Result<Interface> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload? {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import?;
                    let kind = import_kind(&import.ty).to_string();
                    imports.push((import.module.to_string(), import.name.to_string(), kind));
                }
            }
            wasmparser::Payload::ExportSection(section) => {
                for export in section {
                    let export = export?;
                    exports.push((export.name.to_string(), format!("{:?}", export.kind)));
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// What kind of item an import is, without its type (whose indices
/// wasm-opt may renumber; validation checks the types).
fn import_kind(ty: &wasmparser::TypeRef) -> &'static str {
    use wasmparser::TypeRef;
    match ty {
        TypeRef::Func(_) => "function",
        TypeRef::FuncExact(_) => "exact function",
        TypeRef::Table(_) => "table",
        TypeRef::Memory(_) => "memory",
        TypeRef::Global(_) => "global",
        TypeRef::Tag(_) => "tag",
    }
}

/// The component again, with `module` in place of the section at
/// `main`, without its debug names, and marked as shrunk.
fn reassemble(sections: &[Section], main: usize, module: &[u8]) -> Vec<u8> {
    let mut component = wasm_encoder::Component::new();
    for (index, section) in sections.iter().enumerate() {
        if section.custom_name() == Some(COMPONENT_NAMES) {
            continue;
        }
        let data = if index == main {
            module
        } else {
            section.contents
        };
        component.section(&RawSection {
            id: section.id,
            data,
        });
    }
    component.section(&CustomSection {
        name: SHRUNK_MARKER.into(),
        data: b"wasm-opt -Oz".into(),
    });
    component.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component of: one tiny module, a names section, one larger module,
    /// and a custom section of another name.
    fn sample() -> Vec<u8> {
        let mut component = wasm_encoder::Component::new();
        let custom = |name: &'static str, size| CustomSection {
            name: name.into(),
            data: vec![7; size].into(),
        };
        component.section(&RawSection {
            id: CORE_MODULE_SECTION,
            data: b"\0asm\x01\0\0\0",
        });
        component.section(&custom(COMPONENT_NAMES, 200));
        component.section(&RawSection {
            id: CORE_MODULE_SECTION,
            data: &[9; 300],
        });
        component.section(&custom("producers", 0));
        component.finish()
    }

    #[test]
    fn splits_the_top_level_and_finds_the_main_module() {
        let bytes = sample();
        let sections = top_level_sections(&bytes).unwrap();
        let ids: Vec<u8> = sections.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 0, 1, 0]);
        assert_eq!(sections[1].custom_name(), Some(COMPONENT_NAMES));
        assert_eq!(sections[2].contents, &[9; 300][..]);
        assert_eq!(main_module_index(&sections).unwrap(), 2);
    }

    #[test]
    fn reassembly_replaces_the_main_module_drops_names_and_marks() {
        let bytes = sample();
        let sections = top_level_sections(&bytes).unwrap();
        let out = reassemble(&sections, 2, &[5; 150]);
        assert!(wasmparser::Parser::is_component(&out));
        let again = top_level_sections(&out).unwrap();
        let ids: Vec<u8> = again.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 1, 0, 0]);
        assert_eq!(again[0].contents, sections[0].contents);
        assert_eq!(again[1].contents, &[5; 150][..]);
        assert_eq!(again[2].custom_name(), Some("producers"));
        assert_eq!(again[3].custom_name(), Some(SHRUNK_MARKER));
    }

    #[test]
    fn refuses_core_modules_and_truncated_files() {
        assert!(top_level_sections(b"\0asm\x01\0\0\0").is_err());
        let mut truncated = sample();
        truncated.truncate(truncated.len() - 3);
        assert!(top_level_sections(&truncated).is_err());
        // A section size of more than five LEB128 bytes.
        let mut overlong = wasm_encoder::Component::new().finish();
        overlong.extend_from_slice(&[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert!(top_level_sections(&overlong).is_err());
    }
}
