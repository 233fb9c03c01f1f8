#!/usr/bin/env bash
# LFADS on a lent GPU machine that has no TensorFlow and no network (docs/devices.md, "GPU training").
#
#   bench/device/tf_gpu_bench.sh PAYLOAD_DIR OUT_DIR
#
# PAYLOAD_DIR (/tmp/tfparts there, where each call moved its part) holds what
# bench/device/build_tf_payload.sh wrote (p01…pNN and sizes: three xz members of a site-packages tree,
# cut to fit the machine's 64 MiB-per-call transfer): TensorFlow 2.21 for Python 3.12 (debug symbols
# stripped, C++ headers dropped), its pure-Python dependencies, and of TensorFlow's CUDA 12 libraries
# only the small ones (runtime, cuDNN's loader, ptxas and libdevice for XLA). cuBLAS is the machine's
# own (its CUDA 13 copy, /usr/local/cuda-13.0 on the H100 seen, linked under the CUDA 12 name). cuFFT,
# cuSOLVER and cuSPARSE are empty stand-ins: TensorFlow refuses the GPU unless it can dlopen them,
# LFADS calls none of them, and a call would fail loudly (undefined symbol), not compute something
# wrong. tf_site.sh (shared with posterior_gpu.sh) unpacks it and sets TensorFlow up.
#
# Then: the Lorenz bench (training through the run's own lfads_train.sh, posterior sampling, the
# in-process vectorised-vs-per-trial posterior timing on the GPU), three trainings sharing the GPU
# at once through the queue, and the in-process timings on the machine's CPUs.
# LFADS_BENCH_ALLOW_CPU=1 runs it all on a machine without a GPU (a dry run of this script).
set -euo pipefail
payload=$1
out=$2
source "$(dirname "${BASH_SOURCE[0]}")/tf_site.sh"

work=/tmp/lfads_gpu_work
rm -rf "$work"
mkdir -p "$work"
# 1. The bench: training and posterior through the run's scripts (on the GPU: --device=/gpu:0),
#    then the in-process timings on the GPU.
python3 bench/lfads_lorenz.py --profile quick --workdir "$work/bench" --device gpu:0 2>&1 | tee "$out/bench_quick_gpu.txt"
# 2. Several trainings on one GPU at once, placed by the queue through NVML (memory growth on).
#    The quick demo tree holds one run, so three trees.
roots=()
for n in 1 2 3; do roots+=("$(python3 -m manager demo "$work/demo$n" --profile quick --print-collection)"); done
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 2 > "$out/nvidia_smi.csv" &
smi=$!
python3 -m runqueue run "${roots[@]}" --max-per-gpu 3 --quiet 2>&1 | tail -40 | tee "$out/queue.txt"
kill "$smi" || true
python3 -m runqueue status "${roots[@]}" --json > "$out/status.json"
nvidia-smi > "$out/nvidia_smi_after.txt" || true
grep -h "GPU\|placed\|start" "$work"/demo*/runs/*/*/*/lfads.out | head -30 > "$out/run_devices.txt" || true
# 3. The in-process timings again on this machine's CPUs, as a baseline of the same machine.
python3 bench/lfads_lorenz.py --profile quick --workdir "$work/bench" --skip-train --device cpu:0 2>&1 \
    | tee "$out/bench_quick_cpu_inprocess.txt"
