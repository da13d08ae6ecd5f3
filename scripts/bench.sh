#!/usr/bin/env bash
# Build the release binaries and run the control-plane benchmarks:
#
#   skiff-bench api    the real `skiff server` over HTTPS (add --large for 100k pods)
#   skiff-bench rss    idle memory of the server with an empty store
#   skiff-bench pods   pod startup through the node agent against the bare CRI
#                      floor, and the agent's idle memory (as root only: it runs
#                      containerd and pods; skipped otherwise)
#   skiff-bench etcd   durable writes of the embedded store against etcd, same disk
#
# Every report is markdown on stdout, with the target or baseline it is judged
# against; progress goes to stderr. Nothing is written to the repository: paste
# the results into docs/benchmarks.md.
#
# Usage: scripts/bench.sh [ARGS FOR skiff-bench api...]
#   BENCH_DIR=/path  put the servers' data directories there (the disk measured);
#                    default: the system temp directory.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# The etcd baseline comes from Debian; etcd-client's build script needs protoc.
# Install only what is missing, and refresh the package lists only then.
missing=()
for pkg in etcd-server protobuf-compiler; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "bench.sh: installing ${missing[*]}" >&2
    sudo=()
    if ((EUID != 0)); then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo build --release -p skiff -p skiff-bench --features skiff-bench/etcd

bench="$CARGO_TARGET_DIR/release/skiff-bench"
skiff="$CARGO_TARGET_DIR/release/skiff"
dir_args=()
if [[ -n "${BENCH_DIR:-}" ]]; then
    mkdir -p "$BENCH_DIR"
    dir_args=(--dir "$BENCH_DIR")
fi

echo "# Skiff benchmarks, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
"$bench" api "${dir_args[@]}" --skiff "$skiff" "$@"
"$bench" rss "${dir_args[@]}" --skiff "$skiff"
"$bench" scheduling "${dir_args[@]}" --skiff "$skiff"
if ((EUID == 0)); then
    "$bench" pods "${dir_args[@]}" --skiff "$skiff"
else
    echo "bench.sh: skipping skiff-bench pods (needs root)" >&2
fi
"$bench" etcd "${dir_args[@]}"
