#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job (until `shapebias demo` exists): set up, build, and dump the activations of a
# Fashion-MNIST CNN on all 10,000 test images into results/, then summarise the store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build --target shapebias
mkdir -p models results
# The model is scripted with seeded random weights; trained S and R models come with `shapebias train`.
[ -f models/fashion_cnn.pt ] || /usr/bin/python3 scripts/make_models.py models fashion_cnn
sb=build/tools/shapebias
"$sb" layers models/fashion_cnn.pt --input-size 1,28,28
"$sb" dump models/fashion_cnn.pt /usr/share/datasets/fashion-mnist --split test \
  -l features.3,features.6,logits -@ 2 --batch-size 100 -o results/fashion_mnist_test.h5
"$sb" view results/fashion_mnist_test.h5
