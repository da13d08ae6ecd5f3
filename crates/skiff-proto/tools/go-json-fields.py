#!/usr/bin/env python3
"""Lists where Kubernetes JSON differs from a plain rendering of the proto fields.

The .proto IDL says nothing about three facts that only the Go types carry:
  * anonymous (embedded) struct fields, which Go's encoding/json flattens into
    the parent object (`Volume.volumeSource`, `Probe.handler`);
  * fields whose JSON name differs from the proto name (`uID` vs `uid`);
  * which fields Go leaves out of JSON when they hold their zero value. A
    field tagged `omitempty` whose Go type is a non-pointer scalar, slice or
    map is dropped when it is 0, false, "" or empty; pointers keep every
    value they hold, and structs are always written (as `{}` at least), unless
    tagged `omitzero` (only `ObjectMeta.creationTimestamp`, a `Time`).

Usage: go-json-fields.py API_REPO APIMACHINERY_REPO > ../go-json-fields.tsv
where both are git directories (read at HEAD). Output rows:
    inline     <message full name>  <field number>
    rename     <message full name>  <field number>  <json name>
    omitempty  <message full name>  <field number>  scalar | slice | map
    omitzero   <message full name>  <field number>  struct
"""
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent / "proto"

STRUCT = re.compile(r"^type (\w+) struct \{")
FIELD = re.compile(r"^\t(\*?[\w.]+)(?:\s+(\S+))?\s+`([^`]*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')
TYPE_DECL = re.compile(r"^type (\w+)(?:\[[^\]]*\])? (?:= )?(.+?)\s*$")

# Go's predeclared types that encoding/json writes as a JSON scalar.
SCALARS = {
    "string", "bool", "byte", "rune",
    "int", "int8", "int16", "int32", "int64",
    "uint", "uint8", "uint16", "uint32", "uint64", "uintptr",
    "float32", "float64",
}
# Named types from outside the scanned packages, by their underlying type.
EXTERNAL = {"time.Duration": "int64"}

# Apimachinery packages whose named types the API structs use without any
# proto of their own (`types.UID`).
EXTRA_TYPE_DIRS = ["pkg/types"]


def git_show(repo, path):
    return subprocess.run(["git", "-C", repo, "show", f"HEAD:{path}"],
                          check=True, capture_output=True, text=True).stdout


def go_files(repo, directory):
    out = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", "HEAD", directory + "/"],
                         check=True, capture_output=True, text=True).stdout.split()
    return [p for p in out if p.endswith(".go") and not p.endswith("_test.go")
            and "generated" not in p and "zz_" not in p]


def collect_types(repo, directory, types):
    """Records `type Name <underlying>` declarations, keyed by bare name."""
    for path in go_files(repo, directory):
        for line in git_show(repo, path).splitlines():
            m = TYPE_DECL.match(line)
            if m:
                types.setdefault(m.group(1), set()).add(m.group(2))


def category(go_type, types, seen=()):
    """pointer, scalar, slice, map, struct or interface, for a Go type expression."""
    if go_type.startswith("*"):
        return "pointer"
    if go_type.startswith("[]"):
        return "slice"
    if go_type.startswith("map["):
        return "map"
    if go_type.startswith("struct"):
        return "struct"
    if go_type.startswith("interface"):
        return "interface"
    if go_type in SCALARS:
        return "scalar"
    if go_type in EXTERNAL:
        return category(EXTERNAL[go_type], types, seen)
    name = go_type.rsplit(".", 1)[-1]
    if name in seen:
        sys.exit(f"recursive type {go_type}")
    found = {category(u, types, seen + (name,)) for u in types.get(name, ())}
    if len(found) != 1:
        sys.exit(f"cannot tell what Go type {go_type} is: {sorted(found) or 'undeclared'}")
    return found.pop()


def scan(repo, directory, package, types, rows):
    for path in go_files(repo, directory):
        message = None
        for line in git_show(repo, path).splitlines():
            m = STRUCT.match(line)
            if m:
                message = m.group(1)
                continue
            if line.startswith("}"):
                message = None
                continue
            if message is None:
                continue
            f = FIELD.match(line)
            if not f:
                continue
            tags = dict(TAG.findall(f.group(3)))
            if "protobuf" not in tags or "json" not in tags:
                continue
            parts = tags["protobuf"].split(",")
            if len(parts) < 2 or not parts[1].isdigit():
                continue
            number = parts[1]
            proto_name = dict(p.split("=", 1) for p in parts if "=" in p).get("name")
            json_name, *options = tags["json"].split(",")
            if json_name == "-":
                continue
            full = f"{package}.{message}"
            embedded = f.group(2) is None
            if embedded and json_name == "":
                rows.append(("inline", full, number))
                continue
            if json_name and json_name != proto_name:
                rows.append(("rename", full, number, json_name))
            kind = category(f.group(2) or f.group(1), types)
            if kind in ("scalar", "slice", "map") and {"omitempty", "omitzero"} & set(options):
                rows.append(("omitempty", full, number, kind))
            elif kind == "struct" and "omitzero" in options:
                rows.append(("omitzero", full, number, kind))


def main():
    api, machinery = sys.argv[1], sys.argv[2]
    groups = []
    for proto in sorted(PROTO.glob("k8s.io/api/**/generated.proto")):
        directory = str(proto.parent.relative_to(PROTO / "k8s.io/api"))
        groups.append((api, directory, "k8s.io.api." + directory.replace("/", ".")))
    for proto in sorted(PROTO.glob("k8s.io/apimachinery/**/generated.proto")):
        directory = str(proto.parent.relative_to(PROTO / "k8s.io/apimachinery"))
        groups.append((machinery, directory,
                       "k8s.io.apimachinery." + directory.replace("/", ".")))
    types = {}
    for repo, directory, _ in groups:
        collect_types(repo, directory, types)
    for directory in EXTRA_TYPE_DIRS:
        collect_types(machinery, directory, types)
    rows = []
    for repo, directory, package in groups:
        scan(repo, directory, package, types, rows)
    print("# Generated by tools/go-json-fields.py from the Go types matching proto/; do not edit.")
    for row in sorted(set(rows), key=lambda r: (r[0], r[1], int(r[2]))):
        print("\t".join(row))


main()
