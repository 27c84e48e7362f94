#!/usr/bin/env bash
# Install the system packages the project needs, only when they are missing:
# Java 17+ (Spark 4), a C++ toolchain, cmake, boost and compression headers (KenLM's lmplz),
# and Chromium (the report test renders report.html in headless Chromium).
# Quiet: one line saying what is installed; apt's output goes to $SETUP_LOG
# (default build/logs/setup.log); on failure the log's last lines are printed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log=${SETUP_LOG:-build/logs/setup.log}
need=()
if ! command -v java >/dev/null 2>&1 || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then
  need+=(openjdk-17-jre-headless)
fi
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
for pkg in libboost-program-options-dev libboost-system-dev libboost-thread-dev libboost-test-dev \
           zlib1g-dev libbz2-dev liblzma-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: need root (or sudo) to apt-get install: ${need[*]}" >&2; exit 1; fi
fi
echo "installing system packages (${#need[@]}): ${need[*]} (log: $log)"
export DEBIAN_FRONTEND=noninteractive
"$here/quiet.sh" "$log" "apt-get update" $SUDO apt-get update -q
"$here/quiet.sh" "$log" "apt-get install" $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
