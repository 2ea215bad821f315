#!/usr/bin/env bash
# Build PRESTO (Ransom's pulsar search suite) from source, for benchmarks/radio_vs_presto.py.
#
# Usage: scripts/build_presto.sh SRC PREFIX
#   SRC     a PRESTO checkout (git clone https://github.com/scottransom/presto)
#   PREFIX  where it is installed (bin/, lib/, share/presto); the benchmark takes --presto PREFIX
#
# Needs root for Debian's packages: fftw3, cfitsio, glib, gsl, erfa, gfortran, and pgplot5, which is
# in Debian's non-free component (added here if the apt sources lack it). Then meson, as PRESTO's
# INSTALL.md says, and its Python package (single_pulse_search.py and DDplan.py need it) in a venv,
# PREFIX/py: the benchmark runs PRESTO's Python scripts with PREFIX/py/bin/python.
set -euo pipefail
src=${1:?usage: build_presto.sh SRC PREFIX}
prefix=${2:?usage: build_presto.sh SRC PREFIX}
src=$(cd "$src" && pwd)
mkdir -p "$prefix" && prefix=$(cd "$prefix" && pwd)

if ! dpkg -s pgplot5 >/dev/null 2>&1; then
  for f in /etc/apt/sources.list.d/*.sources; do
    grep -q non-free "$f" || sed -i 's/^Components: main$/Components: main non-free/' "$f"
  done
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    build-essential gfortran pkg-config libfftw3-dev libgsl-dev liberfa-dev pgplot5 \
    libglib2.0-dev libcfitsio-dev libpng-dev libx11-dev python3-venv >/dev/null
fi
# PRESTO needs meson >= 1.3 (bookworm has 1.0): a private venv holds the build tools
python3 -m venv "$prefix/.build-tools"
"$prefix/.build-tools/bin/pip" install -q 'meson>=1.3' ninja
export PATH="$prefix/.build-tools/bin:$PATH"
cd "$src"
rm -rf build
meson setup build --prefix="$prefix"
meson compile -C build
meson install -C build >/dev/null
rm -rf "$prefix/py"
python3 -m venv "$prefix/py"
"$prefix/py/bin/pip" install -q numpy scipy matplotlib astropy meson-python 'meson>=1.3' ninja
(cd python && LIBRARY_PATH="$prefix/lib/x86_64-linux-gnu:$prefix/lib" "$prefix/py/bin/pip" install -q --no-build-isolation .)
echo "PRESTO installed in $prefix: $(ls "$prefix/bin" | tr '\n' ' ')"
