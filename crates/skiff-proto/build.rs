//! Compiles the vendored Kubernetes `.proto` files (see `proto/README.md`) into
//! one serialized `FileDescriptorSet` that the crate embeds. `protox` is pure
//! Rust, so no `protoc` is needed on the build machine.
//!
//! It also writes the list of "list wrapper" messages: Go named slice types
//! such as `metav1.Verbs`, which go-to-protobuf wraps in a message with one
//! `repeated items = 1` field and marks `+protobuf.nullable=true`, but whose
//! JSON form is a plain array. Reading the marker from the IDL comments keeps
//! that knowledge out of hand-written tables.
//!
//! Finally it checks every row of `go-json-fields.tsv` (facts from the Go
//! struct tags: embedded structs, renamed keys, fields omitted when zero)
//! against the descriptors, so a stale table fails the build instead of
//! silently mis-shaping JSON.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use protox::prost::Message as _;
use protox::prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
use protox::prost_reflect::prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
};

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
    let go_fields = go_json_fields(&fds, &wrappers);
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
/// `(message, field number, GoRow)`.
fn go_json_fields(fds: &FileDescriptorSet, wrappers: &[String]) -> String {
    let table = std::fs::read_to_string("go-json-fields.tsv").expect("reading go-json-fields.tsv");
    let mut out = String::from("&[\n");
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let columns: Vec<&str> = line.split('\t').collect();
        let (row, message, number) = match columns[..] {
            ["inline", message, number] => ("GoRow::Inline".to_owned(), message, number),
            ["rename", message, number, json] => {
                (format!("GoRow::Rename({json:?})"), message, number)
            }
            ["omitempty" | "omitzero", message, number, _] => {
                ("GoRow::OmitEmpty".to_owned(), message, number)
            }
            _ => panic!("malformed go-json-fields.tsv row {line:?}"),
        };
        let number: i32 = number.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let (parent, field) = find_field(fds, message, number)
            .unwrap_or_else(|| panic!("go-json-fields.tsv names a missing field: {line:?}"));
        let singular = field.label() != Label::Repeated;
        let is_message = field.r#type() == Type::Message;
        let message_type = field.type_name().trim_start_matches('.');
        let is_map = !singular && is_message && is_map_entry(parent, field);
        let fits = match columns[..] {
            ["inline", ..] => singular && is_message,
            ["rename", ..] => true,
            ["omitempty", .., "scalar"] => singular && !is_message && field.r#type() != Type::Bytes,
            ["omitempty", .., "map"] => is_map,
            // A Go slice: a repeated field, `[]byte`, or a named slice type
            // wrapped in a message (`metav1.Verbs`).
            ["omitempty", .., "slice"] if singular => {
                field.r#type() == Type::Bytes || wrappers.iter().any(|w| w == message_type)
            }
            ["omitempty", .., "slice"] => !is_map,
            // Only times have a zero value whose JSON form (`null`) to_json
            // can recognise.
            ["omitzero", .., "struct"] => {
                singular
                    && matches!(
                        message_type,
                        "k8s.io.apimachinery.pkg.apis.meta.v1.Time"
                            | "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime"
                    )
            }
            _ => false,
        };
        assert!(
            fits,
            "go-json-fields.tsv row does not fit the field's proto type: {line:?}"
        );
        writeln!(out, "    ({message:?}, {number}, {row}),").expect("writing to a String");
    }
    out.push(']');
    out
}

/// Finds a top-level message by full name and one of its fields by number.
fn find_field<'a>(
    fds: &'a FileDescriptorSet,
    message: &str,
    number: i32,
) -> Option<(&'a DescriptorProto, &'a FieldDescriptorProto)> {
    fds.file.iter().find_map(|file| {
        let name = message.strip_prefix(file.package())?.strip_prefix('.')?;
        let message = file.message_type.iter().find(|m| m.name() == name)?;
        let field = message.field.iter().find(|f| f.number() == number)?;
        Some((message, field))
    })
}

/// Whether `field` of `parent` is a map: its type is a nested map entry.
fn is_map_entry(parent: &DescriptorProto, field: &FieldDescriptorProto) -> bool {
    let entry = field.type_name().rsplit('.').next();
    parent.nested_type.iter().any(|nested| {
        Some(nested.name()) == entry
            && nested
                .options
                .as_ref()
                .is_some_and(|options| options.map_entry())
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
