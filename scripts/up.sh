#!/usr/bin/env bash
# Bring up a Skiff cluster on this machine: install what is needed, build the
# release binary and run `skiff server` in the foreground (Ctrl-C stops it).
#
#   SKIFF_DATA_DIR   data directory (default /var/lib/skiff)
#   CARGO_TARGET_DIR build directory (default ~/.cache/skiff/target)
# Extra arguments are passed to `skiff server`, e.g. `scripts/up.sh --https-port 7443`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff/target}"
cargo build --release -p skiff
exec "$CARGO_TARGET_DIR/release/skiff" server --data-dir "${SKIFF_DATA_DIR:-/var/lib/skiff}" "$@"
