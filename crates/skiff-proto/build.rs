//! Compiles the vendored Kubernetes `.proto` files (see `proto/README.md`) into
//! one serialized `FileDescriptorSet` that the crate embeds. `protox` is pure
//! Rust, so no `protoc` is needed on the build machine.
//!
//! It also writes the list of "list wrapper" messages: Go named slice types
//! such as `metav1.Verbs`, which go-to-protobuf wraps in a message with one
//! `repeated items = 1` field and marks `+protobuf.nullable=true`, but whose
//! JSON form is a plain array. Reading the marker from the IDL comments keeps
//! that knowledge out of hand-written tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protox::prost::Message as _;
use protox::prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
use protox::prost_reflect::prost_types::{FieldDescriptorProto, FileDescriptorSet};

/// `FileDescriptorProto.message_type` in source-code-info paths.
const MESSAGE_TYPE_PATH: i32 = 4;

fn main() {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=go-json-fields.tsv");

    let mut files = Vec::new();
    collect_protos(root, &mut files);
    files.sort();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            f.strip_prefix(root)
                .expect("walked under proto/")
                .to_path_buf()
        })
        .collect();

    let mut compiler = protox::Compiler::new([root]).unwrap_or_else(|e| panic!("{e}"));
    compiler.include_imports(true).include_source_info(true);
    compiler
        .open_files(&relative)
        .unwrap_or_else(|e| panic!("compiling proto/: {e}"));
    let mut fds = compiler.file_descriptor_set();

    let wrappers = list_wrappers(&fds);
    let go_fields = go_json_fields(&fds);
    // Comments are only needed for the scan above; drop them to keep the
    // embedded set small.
    for file in &mut fds.file {
        file.source_code_info = None;
    }

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("k8s.fds"), fds.encode_to_vec()).expect("writing k8s.fds");

    let mut list = String::from("&[\n");
    for name in wrappers {
        writeln!(list, "    {name:?},").expect("writing to a String");
    }
    list.push(']');
    std::fs::write(out.join("list_wrappers.rs"), list).expect("writing list_wrappers.rs");
    std::fs::write(out.join("go_json_fields.rs"), go_fields).expect("writing go_json_fields.rs");
}

/// Reads `go-json-fields.tsv` (see `tools/go-json-fields.py`), checks every
/// row against the descriptors, and renders it as a Rust slice expression of
/// `(message, field number, Some(json name) | None for inline)`.
fn go_json_fields(fds: &FileDescriptorSet) -> String {
    let table = std::fs::read_to_string("go-json-fields.tsv").expect("reading go-json-fields.tsv");
    let mut out = String::from("&[\n");
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let (rename, message, number) = match columns[..] {
            ["inline", message, number] => (None, message, number),
            ["rename", message, number, json] => (Some(json), message, number),
            _ => panic!("malformed go-json-fields.tsv row {line:?}"),
        };
        let number: i32 = number.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let field = find_field(fds, message, number)
            .unwrap_or_else(|| panic!("go-json-fields.tsv names a missing field: {line:?}"));
        if rename.is_none() {
            assert!(
                field.r#type() == Type::Message && field.label() != Label::Repeated,
                "inline field is not a singular message: {line:?}"
            );
        }
        writeln!(out, "    ({message:?}, {number}, {rename:?}),").expect("writing to a String");
    }
    out.push(']');
    out
}

fn find_field<'a>(
    fds: &'a FileDescriptorSet,
    message: &str,
    number: i32,
) -> Option<&'a FieldDescriptorProto> {
    fds.file.iter().find_map(|file| {
        let name = message.strip_prefix(file.package())?.strip_prefix('.')?;
        let message = file.message_type.iter().find(|m| m.name() == name)?;
        message.field.iter().find(|f| f.number() == number)
    })
}

/// Full names of top-level messages whose leading comment carries
/// `+protobuf.nullable=true` and which consist of a single repeated field 1.
fn list_wrappers(fds: &FileDescriptorSet) -> Vec<String> {
    let mut found = Vec::new();
    for file in &fds.file {
        let Some(info) = &file.source_code_info else {
            continue;
        };
        for location in &info.location {
            let [MESSAGE_TYPE_PATH, index] = location.path[..] else {
                continue;
            };
            let marked = location
                .leading_comments()
                .lines()
                .any(|l| l.trim() == "+protobuf.nullable=true");
            if !marked {
                continue;
            }
            let message = usize::try_from(index)
                .ok()
                .and_then(|i| file.message_type.get(i))
                .expect("source info points at a message");
            let single_repeated = matches!(
                &message.field[..],
                [field] if field.number() == 1 && field.label() == Label::Repeated
            );
            assert!(
                single_repeated,
                "{} is marked nullable but is not a single repeated field",
                message.name()
            );
            found.push(format!("{}.{}", file.package(), message.name()));
        }
    }
    found.sort();
    found
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading a proto/ entry").path();
        if path.is_dir() {
            collect_protos(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}
