#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The shape-bias study of paper-spec §2 on Fashion-MNIST: a standard (S) and a PGD-trained (R)
# CNN, their accuracy on the clean test set, the CL set (test images both classify correctly), and
# on the variants of that set: Gaussian noise, patches scrambled 2x2 and 4x4, Canny edges and
# filled silhouettes (by thresholding: Fashion-MNIST objects sit on a black background).
#
#   bash scripts/fmnist_shape_study.sh [S.pt R.pt]     (env: TRAIN_LIMIT, EPOCHS, OUT, SB)
#
# Without models it trains them with `shapebias train` (TRAIN_LIMIT images, EPOCHS epochs; PGD
# L-inf eps 0.1, 7 steps for R) into $OUT/models, or reuses them if present there.
set -euo pipefail
cd "$(dirname "$0")/.."
SB=${SB:-build/tools/shapebias}
OUT=${OUT:-results/shape_study}
FMNIST=/usr/share/datasets/fashion-mnist
TRAIN_LIMIT=${TRAIN_LIMIT:-20000}
EPOCHS=${EPOCHS:-3}
mkdir -p "$OUT/models"
if [ $# -eq 2 ]; then
  S=$1 R=$2
else
  S=$OUT/models/S/model.pt R=$OUT/models/R/model.pt
  for kind in S R; do
    model=$OUT/models/$kind/model.pt
    [ -f "$model" ] && continue
    adv=none; [ $kind = R ] && adv=pgd
    "$SB" train $FMNIST --split train --arch fashion-cnn --limit "$TRAIN_LIMIT" --epochs "$EPOCHS" \
      --adversarial $adv --eps 0.1 --alpha 0.025 --steps 7 --seed 1 -@ 2 -o "$OUT/models/$kind"
  done
fi
"$SB" eval "$S" "$R" $FMNIST --split test --names S,R -@ 2 --batch-size 200 \
  --variant noise=noise:0.1 \
  --variant scrambled_2x2=scramble:2 \
  --variant scrambled_4x4=scramble:4 \
  --variant edges=edges \
  --variant silhouettes=silhouette \
  -o "$OUT/eval"
echo "wrote $OUT/eval (accuracy.csv, accuracy.json, cl_ids.txt, stores/, provenance.json)" >&2
