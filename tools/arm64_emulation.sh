#!/usr/bin/env bash
# AArch64 ONNX Runtime under user-mode emulation, for tests/test_arm64_runtime.py.
#
#   bash tools/arm64_emulation.sh            # set up (or check) the cache, print the wrapper's path
#   QC_ARM64_ROOT=DIR bash tools/...         # cache somewhere else (default: .arm64-emu/ in the repo)
#
# What it builds under the cache (nothing is installed into the host's dpkg):
#   qemu/qemu-aarch64   static qemu-user from Debian trixie (>= 8.2: with bookworm's 7.2,
#                       onnxruntime segfaults at import while its cpuinfo reads the host's x86
#                       /proc/cpuinfo; newer qemu emulates /proc/cpuinfo for the guest)
#   sysroot/            arm64 Debian bookworm CPython 3.11 and its libraries, unpacked with
#                       dpkg -x from .debs fetched by a private apt configuration
#   site/               aarch64 wheels of onnxruntime and numpy, the host venv's versions
#   bin/a64-python      the wrapper: arm64 python under qemu, QEMU_CPU=neoverse-n1 unless set
#                       (qemu's default `max` core has SME/SVE paths no Graviton has)
#   stamp               what was built; when it matches, a rerun only checks the wrapper
#
# Needs: apt-get, dpkg-deb, the Debian archive keyring (trixie keys included in bookworm's
# debian-archive-keyring), a host python with pip (QC_HOST_PYTHON, default python3), network
# access to a Debian mirror (DEBIAN_MIRROR, default: the host's apt mirror) and PyPI.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${QC_ARM64_ROOT:-$REPO/.arm64-emu}
HOST_PY=${QC_HOST_PYTHON:-python3}
PYV=3.11
T0=$SECONDS
say() { echo "[arm64-emu $((SECONDS - T0))s] $*" >&2; }
die() { echo "error: $1 (hint: $2)" >&2; exit 2; }

for tool in apt-get dpkg-deb dpkg; do
    command -v "$tool" >/dev/null || die "'$tool' not found" "this script needs a Debian/Ubuntu host"
done
"$HOST_PY" -m pip --version >/dev/null 2>&1 \
    || die "'$HOST_PY -m pip' does not work" "activate a venv with pip or set QC_HOST_PYTHON"
KEYRING=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
[ -r "$KEYRING" ] || die "Debian archive keyring $KEYRING missing" "apt-get install debian-archive-keyring"

# the aarch64 side runs the host venv's onnxruntime and numpy versions, so both sides
# compare the same release
host_version() {
    "$HOST_PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null || echo "$2"
}
ORT_VERSION=${QC_ARM64_ORT_VERSION:-$(host_version onnxruntime 1.32.0)}
NUMPY_VERSION=${QC_ARM64_NUMPY_VERSION:-$(host_version numpy 2.4.6)}

mirrors() {  # the host's apt mirrors (deb822 first, one-line format second)
    cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | awk '/^URIs:/ || /^deb / {print $2}' | awk '!seen[$0]++' || true
}
MIRROR=${DEBIAN_MIRROR:-$(mirrors | awk '!/security/ && !f {print; f = 1}')}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(mirrors | awk '/security/ && !f {print; f = 1}')}
SEC_MIRROR=${SEC_MIRROR:-http://deb.debian.org/debian-security}

WANT="python=$PYV onnxruntime=$ORT_VERSION numpy=$NUMPY_VERSION qemu=trixie"
WRAPPER=$ROOT/bin/a64-python
smoke() {
    QEMU_CPU=neoverse-n1 timeout 300 "$WRAPPER" -c \
        "import onnxruntime as o, numpy as n, platform; print(platform.machine(), 'onnxruntime', o.__version__, 'numpy', n.__version__)"
}

if [ -f "$ROOT/stamp" ] && [ "$(cat "$ROOT/stamp")" = "$WANT" ] && smoke >&2; then
    say "cached: $WANT"
    echo "$WRAPPER"
    exit 0
fi

# private apt: $1 = dir, $2 = arch, $3 = deb822 sources; own lists, cache and empty dpkg
# status, so apt resolves the whole dependency closure and downloads it without touching
# the host's package database
private_apt() {
    local d=$1 arch=$2
    mkdir -p "$d"/{lists/partial,cache/archives/partial,sources}
    : > "$d/status"
    printf '%s\n' "$3" > "$d/sources/debian.sources"
    cat > "$d/apt.conf" <<EOF
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Install-Recommends "false";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Dir::State "$d"; Dir::State::Lists "$d/lists"; Dir::State::status "$d/status";
Dir::Cache "$d/cache";
Dir::Etc::SourceList "/dev/null"; Dir::Etc::SourceParts "$d/sources";
Dir::Etc::Preferences "/dev/null"; Dir::Etc::PreferencesParts "$d/prefs";
EOF
    mkdir -p "$d/prefs"
    APT_CONFIG="$d/apt.conf" timeout 300 apt-get update -qq
}
# bytes fetched from the network (indexes stay compressed, as downloaded), for the report
FETCHED=0
fetched() { FETCHED=$((FETCHED + $(du -sb "$@" | awk '{s += $1} END {print s}'))); }

mkdir -p "$ROOT"
cd "$ROOT"
rm -rf stamp apt-qemu apt-arm64 qemu sysroot site wheels bin

say "qemu-user (trixie, static) from $MIRROR"
private_apt "$ROOT/apt-qemu" amd64 "Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: $KEYRING"
mkdir -p qemu
(cd qemu && APT_CONFIG="$ROOT/apt-qemu/apt.conf" timeout 600 apt-get download -qq qemu-user/trixie)
timeout 120 dpkg-deb --fsys-tarfile qemu/qemu-user_*.deb | tar -xO ./usr/bin/qemu-aarch64 > qemu/qemu-aarch64
chmod +x qemu/qemu-aarch64
fetched qemu/*.deb apt-qemu/lists
rm -f qemu/*.deb
rm -rf apt-qemu
qemu/qemu-aarch64 --version | head -1 >&2

say "arm64 bookworm python$PYV sysroot"
private_apt "$ROOT/apt-arm64" arm64 "Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: $KEYRING

Types: deb
URIs: $SEC_MIRROR
Suites: bookworm-security
Components: main
Signed-By: $KEYRING"
APT_CONFIG="$ROOT/apt-arm64/apt.conf" timeout 600 apt-get install -y -qq --download-only \
    "python$PYV" libstdc++6 >/dev/null
mkdir -p sysroot
for deb in apt-arm64/cache/archives/*.deb; do timeout 60 dpkg -x "$deb" sysroot; done
fetched apt-arm64/cache/archives apt-arm64/lists
rm -rf apt-arm64

say "aarch64 wheels: onnxruntime==$ORT_VERSION numpy==$NUMPY_VERSION"
PLAT=(--only-binary=:all: --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" --abi abi3
      --abi none --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64
      --platform manylinux_2_28_aarch64 --platform linux_aarch64)
timeout 900 "$HOST_PY" -m pip download -q --disable-pip-version-check "${PLAT[@]}" -d wheels \
    "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION"
timeout 900 "$HOST_PY" -m pip install -q --disable-pip-version-check "${PLAT[@]}" --no-index \
    --find-links wheels --target site "onnxruntime==$ORT_VERSION" "numpy==$NUMPY_VERSION"
fetched wheels
rm -rf wheels

mkdir -p bin
cat > "$WRAPPER" <<EOF
#!/bin/sh
# arm64 CPython $PYV under qemu-user with aarch64 onnxruntime $ORT_VERSION and numpy $NUMPY_VERSION
# (written by tools/arm64_emulation.sh). QEMU_CPU picks the emulated core.
export QEMU_CPU="\${QEMU_CPU:-neoverse-n1}"
export PYTHONPATH="$ROOT/site" PYTHONNOUSERSITE=1
unset PYTHONHOME
exec "$ROOT/qemu/qemu-aarch64" -L "$ROOT/sysroot" "$ROOT/sysroot/usr/bin/python$PYV" "\$@"
EOF
chmod +x "$WRAPPER"
smoke >&2 || die "the emulated onnxruntime does not import" "rerun with bash -x and read the qemu output"
echo "$WANT" > stamp
echo "$FETCHED" > fetched-bytes
say "ready: $((FETCHED / 1000000)) MB fetched, $(du -sh "$ROOT" | cut -f1) on disk in $ROOT"
echo "$WRAPPER"
