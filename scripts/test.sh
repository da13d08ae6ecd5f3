#!/usr/bin/env bash
# Run everything CI runs: system packages, test tools, formatting, lints and
# every test of the workspace (unit tests and the integration tests that drive
# the real `skiff` binary with real kubectl, helm and Python clients).
#
# Builds go to CARGO_TARGET_DIR (default ~/.cache/skiff/target) so that a fresh
# clone reuses earlier builds. Tests are built once, in the test profile; the
# integration tests run the `skiff` binary cargo builds for them
# (CARGO_BIN_EXE_skiff).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/setup.sh"
# The harness finds the tools in the cache by itself; exporting the paths also
# makes them visible to anything else the tests start.
tool_env="$("$root/scripts/install-test-tools.sh")"
while IFS='=' read -r name value; do
    export "$name=$value"
done <<<"$tool_env"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff/target}"
# One build per run: incremental state only grows the target directory, and a
# nearly full disk makes the test node report DiskPressure (upstream's 10%).
export CARGO_INCREMENTAL=0
rm -rf "$CARGO_TARGET_DIR/debug/incremental"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> cargo fmt" >&2
cargo fmt --all --check
echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests" >&2
# Plain `cargo test`, not nextest: nextest runs every test in its own process,
# which would start one server per test instead of one per test binary.
status=0
cargo test --workspace --locked --no-fail-fast || status=$?

# The clusters shared by a test binary live in statics, which are never
# dropped: stop the pods their node agents left running.
skiff_bin="$CARGO_TARGET_DIR/debug/skiff"
for dir in "${TMPDIR:-/tmp}"/skiff-test-*; do
    if [[ -d "$dir/agent" && -x "$skiff_bin" ]]; then
        "$skiff_bin" killall --data-dir "$dir" || echo "killall $dir failed" >&2
    fi
done
exit "$status"
