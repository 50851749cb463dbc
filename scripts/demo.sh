#!/usr/bin/env bash
# The main job: personalize the shipped spoken-digit model to one new speaker, on this machine
# (the embedded default: this machine is the board). Writes everything into demo_out/.
# Installs only what the demo runs: edgeprune's core and the LiteRT interpreter (no TensorFlow;
# scripts/test.sh adds the host and test extras to the same .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh litert
export PATH="$PWD/.venv/bin:$PATH"

demo=examples/fsdd_demo
out=${DEMO_OUT:-demo_out}
mkdir -p "$out"

echo "== the source model"
edgeprune inspect "$demo/model.tflite"
echo
echo "== record the activation map over the speaker's unlabeled recordings, prune at 50 %"
edgeprune record "$demo/model.tflite" "$demo/unlabeled.npy" -o "$out/map.npz"
edgeprune prune "$demo/model.tflite" "$out/map.npz" --sparsity 0.5 -o "$out/pruned.tflite"
echo
echo "== personalize: each stage fitted on half the recordings, kept only if the other half's"
echo "   label-free accuracy estimate (against the source reference) does not drop"
edgeprune personalize "$demo/model.tflite" "$demo/unlabeled.npy" -o "$out/personalized.tflite" \
  --reference "$demo/reference.npz" \
  --test "$demo/test.npz" --report "$out/report" -q
