#!/usr/bin/env bash
# Build KenLM's `lmplz` (n-gram estimation) and `build_binary` (ARPA -> binary) from the
# kenlm source package on the package index and install them into the virtualenv's bin/.
#
# Usage: tools/build_kenlm.sh [VENV]          (default VENV: .venv)
# Env:   KENLM_VERSION (default 0.3.0, the version pinned in pyproject.toml)
#        KENLM_SDIST   path of an already downloaded kenlm-<ver>.tar.gz (offline builds)
#        BUILD_DIR     scratch directory (default build/tools)
#        JOBS          parallel compile jobs (default 2)
#
# Skipped when both binaries are already installed and run. Needs cmake, a C++ compiler, Boost
# (program_options, system, thread, test) and zlib/bz2/lzma headers; when they are missing and
# we run as root with apt-get, they are installed (CI starts from a clean machine).
set -euo pipefail

VENV="${1:-.venv}"
KENLM_VERSION="${KENLM_VERSION:-0.3.0}"
BUILD_DIR="${BUILD_DIR:-build/tools}"
JOBS="${JOBS:-2}"
BIN="$VENV/bin"

if [[ ! -x "$BIN/python" ]]; then
  echo "build_kenlm: no virtualenv at $VENV (run make setup first)" >&2
  exit 1
fi

have_tools() {
  [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" ]] || return 1
  # Both print their usage and exit 1 when called without work; they must at least load.
  local out
  out=$("$BIN/lmplz" --help 2>&1 || true)
  [[ $out == *Kneser-Ney* ]] || return 1
  out=$("$BIN/build_binary" 2>&1 || true)
  [[ $out == *Usage:*build_binary* ]] || return 1
}

if have_tools; then
  echo "build_kenlm: lmplz and build_binary already in $BIN, skipping"
  exit 0
fi

# ---- system build dependencies ------------------------------------------------------------
PKGS=(cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
      libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if (( ${#missing[@]} )); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "build_kenlm: installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "build_kenlm: missing system packages (install them as root): ${missing[*]}" >&2
    exit 1
  fi
fi

# ---- sources -------------------------------------------------------------------------------
mkdir -p "$BUILD_DIR"
BUILD_DIR="$(cd "$BUILD_DIR" && pwd)"
SRC_TGZ="${KENLM_SDIST:-$BUILD_DIR/kenlm-$KENLM_VERSION.tar.gz}"
if [[ ! -f "$SRC_TGZ" ]]; then
  echo "build_kenlm: downloading kenlm==$KENLM_VERSION source package"
  # --no-build-isolation: pip only needs the venv's setuptools to read the sdist metadata.
  "$BIN/python" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
      -d "$BUILD_DIR" "kenlm==$KENLM_VERSION" >"$BUILD_DIR/download.log" 2>&1 \
    || { tail -40 "$BUILD_DIR/download.log" >&2; exit 1; }
fi
SRC="$BUILD_DIR/kenlm-$KENLM_VERSION"
# An earlier, interrupted build is resumed (cmake builds incrementally).
[[ -f "$SRC/CMakeLists.txt" ]] || tar -xzf "$SRC_TGZ" -C "$BUILD_DIR"

# ---- build only the two programs -----------------------------------------------------------
echo "build_kenlm: configuring (cmake, Release)"
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >"$BUILD_DIR/cmake.log" 2>&1 \
  || { tail -40 "$BUILD_DIR/cmake.log" >&2; exit 1; }
echo "build_kenlm: compiling lmplz build_binary (-j$JOBS; a few minutes)"
cmake --build "$SRC/build" --target lmplz build_binary -j "$JOBS" >"$BUILD_DIR/make.log" 2>&1 \
  || { tail -40 "$BUILD_DIR/make.log" >&2; exit 1; }
install -m 0755 "$SRC/build/bin/lmplz" "$SRC/build/bin/build_binary" "$BIN/"
have_tools || { echo "build_kenlm: installed binaries do not run" >&2; exit 1; }
echo "build_kenlm: installed $BIN/lmplz and $BIN/build_binary"
