#!/usr/bin/env bash
# The posterior-sampling step on a lent GPU, phase by phase, with and without XLA; and the queue's
# `gpu` tests (NVML, real GPU memory) on the same machine.
#
#   bench/device/posterior_gpu.sh PAYLOAD_DIR OUT_DIR
#
# PAYLOAD_DIR as for tf_gpu_bench.sh. A quick Lorenz demo run is trained for 3 epochs on the GPU (a
# checkpoint is all the posterior step needs: its work does not depend on how well the model fits),
# then bench/lfads_posterior_phases.py times its posterior step with --jit_compile true and false, on the
# GPU and on the machine's CPUs. The gpu tests need nvidia-ml-py and pytest in python3 there.
set -euo pipefail
payload=$1
out=$2
here="$(dirname "${BASH_SOURCE[0]}")"
mkdir -p "$out"
# The tests first and alone: a TensorFlow process on the GPU would be a foreign process to them.
export PYTHONPATH="$PWD"
timeout 240 python3 -m pytest -p no:cacheprovider -m gpu -v -rs tests/runqueue > "$out/gpu_tests.txt" 2>&1 \
    || echo "gpu tests: exit $?" >> "$out/gpu_tests.txt"
tail -15 "$out/gpu_tests.txt"
source "$here/tf_site.sh"
work=/tmp/lfads_posterior_gpu
rm -rf "$work"
collection=$(python3 -m manager demo "$work" --profile quick --print-collection | tail -1)
run=$(dirname "$(find "$collection" -name lfads_train.sh | head -1)")
sed 's/--max_epochs=[0-9]*/--max_epochs=3/' "$run/lfads_train.sh" > "$run/train_short.sh"
{ time bash "$run/train_short.sh"; } > "$out/train_short.txt" 2>&1
for device in gpu:0 cpu:0; do
    for jit in true false; do
        python3 "$here/../lfads_posterior_phases.py" "$run" --jit_compile "$jit" --device "$device" 2>&1 \
            | grep -v '^Writing data\|^Done: ' | tee "$out/posterior_${device%%:*}_jit_$jit.txt" || true
    done
done
