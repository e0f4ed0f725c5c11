#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs every Debian package shapebias needs to build, test and run. Idempotent.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev                                   # models, autograd (LibTorch 1.13, CPU)
  libxtensor-dev xtl-dev libxtensor-blas-dev libopenblas-dev
  libhdf5-dev hdf5-tools                         # tensor store; h5dump in tests
  catch2 libcli11-dev nlohmann-json3-dev
  libpng-dev libjpeg-dev                         # image decoding (libjpeg-turbo)
  libcsv-dev                                     # Broden probe sets' CSV files
  libfftw3-dev                                   # spectra (shapebias::spectrum)
  libopencv-imgproc-dev                          # Canny edges, hole filling (--transform)
  libssl-dev zlib1g-dev                          # sha256 for provenance; the store's deflate
  libbenchmark-dev
  openmpi-bin libopenmpi-dev                     # optional MPI mode (--mpi); the default build does not need it
  pybind11-dev python3-dev python3-numpy python3-pytest
  python3-torch python3-torchvision python3-h5py python3-pil   # fixtures and references only
  dataset-fashion-mnist                          # the embedded default data set
  time                                           # /usr/bin/time for peak-memory benchmarks
  chromium chromium-driver python3-selenium      # the report's browser test (headless Chromium)
)
# npm fetches the report's chart libraries; any Node.js that has npm will do (Debian's, or another).
command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: all ${#packages[@]} packages present" >&2

# The report's chart libraries (vega, vega-lite, vega-embed), pinned by tools/report/package-lock.json:
# installed from the npm registry into tools/report/node_modules unless every pinned version is there.
report="$(cd "$(dirname "$0")/../tools/report" && pwd)"
if ! (cd "$report" && node -e '
  const lock = require("./package-lock.json").packages;
  for (const p of ["vega", "vega-lite", "vega-embed"]) {
    if (require(`./node_modules/${p}/package.json`).version !== lock[`node_modules/${p}`].version) process.exit(1);
    require("fs").accessSync(`./node_modules/${p}/build/${p}.min.js`);
  }' 2>/dev/null); then
  (cd "$report" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: report libraries present in $report/node_modules" >&2
