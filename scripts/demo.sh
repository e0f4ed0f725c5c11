#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job: set up, build, and run the paper's whole S-vs-R study on Fashion-MNIST
# (`shapebias demo`): train S and R (or reuse results/models), run every analysis, write the report.
# Extra arguments go to `shapebias demo` (for example --full, or -o another folder).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target shapebias
build/tools/shapebias demo -o results "$@"
