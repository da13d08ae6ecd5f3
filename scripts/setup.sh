#!/usr/bin/env bash
# Install the Debian packages Skiff needs to build and run. Idempotent: a
# package already installed is skipped, and `apt-get update` runs only when
# something is missing. Needs root (or passwordless sudo) only in that case.
set -euo pipefail

packages=(
    build-essential    # cc and ar for crates with C parts (ring)
    ca-certificates    # TLS to the package registries
    iproute2           # `ip`, to inspect and set up host networking
    util-linux         # setpriv: the test harness ties servers to the test process
    python3            # the test tools' virtualenv (kubernetes client)
    python3-venv
    containerd         # the container runtime the node agent supervises
    runc               # containerd's default OCI runtime (crun fails here)
    containernetworking-plugins  # CNI bridge/host-local/portmap/loopback in /usr/lib/cni
    busybox-static     # rootfs of the pause and test images the agent builds
    iptables           # CNI bridge ipMasq and portmap (hostPort) program iptables-nft
    nftables           # service proxy and network policy rules
)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

echo "setup.sh: installing ${missing[*]}" >&2
sudo=()
if ((EUID != 0)); then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
