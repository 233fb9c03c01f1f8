#!/usr/bin/env bash
# LFADS on a lent GPU machine that has no TensorFlow and no network (docs/devices.md, "GPU training").
#
#   bench/device/tf_gpu_bench.sh PAYLOAD_DIR OUT_DIR
#
# PAYLOAD_DIR (/tmp/tfparts there, where each call moved its part) holds what bench/device/build_tf_payload.sh wrote (p01…pNN and sizes: three xz members of a
# site-packages tree, cut to fit the machine's 64 MiB-per-call transfer): TensorFlow 2.21 for Python
# 3.12 (debug symbols stripped,
# C++ headers dropped), its pure-Python dependencies, and of TensorFlow's CUDA 12 libraries only the
# small ones (runtime, cuDNN's loader, ptxas and libdevice for XLA). cuBLAS is the machine's own
# (its CUDA 13 copy, /usr/local/cuda-13.0 on the H100 seen, linked under the CUDA 12 name). cuFFT, cuSOLVER and cuSPARSE are empty
# stand-ins: TensorFlow refuses the GPU unless it can dlopen them, LFADS calls none of them, and a
# call would fail loudly (undefined symbol), not compute something wrong.
#
# Then: the Lorenz bench (training through the run's own lfads_train.sh, posterior sampling, the
# in-process vectorised-vs-per-trial posterior timing on the GPU), three trainings sharing the GPU
# at once through the queue, and the in-process timings on the machine's CPUs.
# LFADS_BENCH_ALLOW_CPU=1 runs it all on a machine without a GPU (a dry run of this script).
set -euo pipefail
payload=$1
out=$2
mkdir -p "$out"
site=/tmp/lfads_tf_site
if [ ! -d "$site/tensorflow" ]; then
    # p01…pNN concatenated: libtensorflow_cc.so.2 (xz), then two .tar.xz (the rest of TensorFlow and the
    # CUDA bits; the pure-Python dependencies); `sizes` gives the three byte counts. sci.tar.xz (numpy,
    # scipy, h5py's and matplotlib's stack), when present, is for a machine without them.
    python3 - "$payload" "$site" <<'PY'
import io, lzma, pathlib, sys, tarfile
payload, site = map(pathlib.Path, sys.argv[1:])
blob = b"".join(part.read_bytes() for part in sorted(payload.glob("p[0-9]*")))
sizes = [int(word) for word in (payload / "sizes").read_text().split()]
assert len(blob) == sum(sizes), f"payload has {len(blob)} bytes, sizes say {sum(sizes)}: a part is missing"
(site / "tensorflow").mkdir(parents=True, exist_ok=True)
(site / "tensorflow" / "libtensorflow_cc.so.2").write_bytes(lzma.decompress(blob[:sizes[0]]))
for start, size in ((sizes[0], sizes[1]), (sizes[0] + sizes[1], sizes[2])):
    with tarfile.open(fileobj=io.BytesIO(blob[start:start + size]), mode="r:xz") as archive:
        archive.extractall(site, filter="tar")
if (payload / "sci.tar.xz").exists():
    with tarfile.open(payload / "sci.tar.xz", mode="r:xz") as archive:
        archive.extractall(site, filter="tar")
PY
fi
# cuBLAS: the machine's CUDA 13 copy under the names TensorFlow's loader asks for.
cublas_dir=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)")
mkdir -p "$site/nvidia/cublas/lib"
ln -sf "$cublas_dir/libcublas.so.13" "$site/nvidia/cublas/lib/libcublas.so.12"
ln -sf "$cublas_dir/libcublasLt.so.13" "$site/nvidia/cublas/lib/libcublasLt.so.12"
export PYTHONPATH="$site:$PWD"
# TensorFlow's loader found the cuSOLVER stand-in through no library path of its own (seen on an H100:
# "Could not load dynamic library 'libcusolver.so.11'", so no GPU), while it found the other stand-ins.
export LD_LIBRARY_PATH="$(printf '%s:' "$site"/nvidia/*/lib)${LD_LIBRARY_PATH:-}"
export PATH="$site/nvidia/cuda_nvcc/bin:$PATH"
export XLA_FLAGS="--xla_gpu_cuda_data_dir=$site/nvidia/cuda_nvcc"
export TF_FORCE_GPU_ALLOW_GROWTH=true
# Stop here, with TensorFlow's own log of what it could not load, unless it sees the GPU.
TF_CPP_MIN_LOG_LEVEL=0 python3 - <<'EOF' 2>&1 | tee "$out/tf_devices.txt"
import os
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "GPUs:", gpus)
if not gpus and os.environ.get("LFADS_BENCH_ALLOW_CPU") != "1":  # =1: a dry run of this script on a CPU
    sys.exit(3)
with tf.device("/GPU:0" if gpus else "/CPU:0"):
    a = tf.random.normal((512, 512))
    print("matmul on", (a @ a).device, "sum", float(tf.reduce_sum(a @ tf.transpose(a))))
    @tf.function(jit_compile=True)
    def square_tanh(x):
        return tf.tanh(x @ x)
    print("XLA:", square_tanh(a).device)
EOF

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
