# Sourced by the bench/device scripts on a lent GPU machine: unpacks the TensorFlow payload that
# build_tf_payload.sh wrote into /tmp/lfads_tf_site (once per machine), points TensorFlow at its CUDA
# parts and the machine's cuBLAS, and stops the calling script with TensorFlow's own log
# ($out/tf_devices.txt) unless TensorFlow sees the GPU.
#
#   payload=/tmp/tfparts out=$OUT; source bench/device/tf_site.sh
#
# LFADS_BENCH_ALLOW_CPU=1 lets it go on without a GPU (a dry run on a CPU machine).
: "${payload:?set payload= to the folder holding p01…pNN and sizes}" "${out:?set out= to the output folder}"
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
