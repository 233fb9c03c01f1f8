#!/usr/bin/env bash
# Build the TensorFlow payload that bench/device/tf_gpu_bench.sh unpacks on a lent GPU machine
# (Python 3.12, CUDA 13 torch, no TensorFlow, no network, 64 MiB carried per call).
#
#   bench/device/build_tf_payload.sh [PARTS_DIR]      (default .tfparts; add it to .git/info/exclude)
#
# Needs a Python 3.12 here (PYTHON312, default: the first python3.12 on PATH or under ~/.pyenv), pip
# access, gcc, strip and xz. Writes PARTS_DIR/p01…pNN (≤ 60 MB each: with the working tree they fit one
# call), PARTS_DIR/sizes and PARTS_DIR/sci.tar.xz (numpy, scipy, h5py's and matplotlib's stack, only
# for a machine that lacks them). Carry `p01` and `sizes` in the first call and one part per call after
# it, within the machine's idle time (its `idle_release_s`). Each call must move what it carried out of
# the repository (`mkdir -p /tmp/tfparts && mv .tfparts/* /tmp/tfparts/`): the next call's carry
# replaces the .tfparts folder there. The last call runs tf_gpu_bench.sh /tmp/tfparts "$OUT".
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
parts="$(realpath -m "${1:-$repo/.tfparts}")"
python312=""
for candidate in "${PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        python312=$candidate
        break
    fi
done
[ -n "$python312" ] || { echo "build_tf_payload.sh: no working Python 3.12 found; set PYTHON312" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python312" -m venv "$work/venv"
pip=("$work/venv/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" --no-deps "tensorflow==2.21.0"
"${pip[@]}" "absl-py>=1.0.0" astunparse "flatbuffers>=25.9.23" gast google_pasta opt_einsum packaging \
    "protobuf<8,>=6.31.1" termcolor typing_extensions wrapt "ml_dtypes<1,>=0.5.1" "h5py<3.15,>=3.11" requests \
    numpy scipy matplotlib
site="$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
stage="$work/stage"
mkdir -p "$stage"

# TensorFlow without its C++ headers and debug symbols (1.9 GB -> 1.1 GB).
cp -a "$site/tensorflow" "$stage/"
rm -rf "$stage/tensorflow/include"
find "$stage" -name __pycache__ -prune -exec rm -rf {} +
find "$stage/tensorflow" -name '*.so*' -size +1M -exec strip --strip-unneeded {} \;

# Of TensorFlow's CUDA 12 libraries only the small ones; cuBLAS comes from the machine (see
# tf_gpu_bench.sh); cuFFT, cuSOLVER and cuSPARSE are empty stand-ins that satisfy TensorFlow's
# start-up dlopen check (LFADS calls none of them).
cuda="$work/cuda"
"$work/venv/bin/pip" download -q --no-deps -d "$cuda" "nvidia-cuda-runtime-cu12~=12.9" "nvidia-cuda-nvcc-cu12~=12.9" \
    "nvidia-cudnn-cu12~=9.3"
for wheel in "$cuda"/*.whl; do unzip -q -o "$wheel" -d "$cuda/x"; done
mkdir -p "$stage/nvidia/cuda_runtime/lib" "$stage/nvidia/cudnn/lib" "$stage/nvidia/cuda_nvcc/bin" \
    "$stage/nvidia/cuda_nvcc/nvvm/libdevice"
cp "$cuda/x/nvidia/cuda_runtime/lib/libcudart.so.12" "$stage/nvidia/cuda_runtime/lib/"
cp "$cuda/x/nvidia/cudnn/lib/libcudnn.so.9" "$stage/nvidia/cudnn/lib/"
cp "$cuda/x/nvidia/cuda_nvcc/bin/ptxas" "$stage/nvidia/cuda_nvcc/bin/"
cp "$cuda/x/nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc" "$stage/nvidia/cuda_nvcc/nvvm/libdevice/"
echo 'int lfads_bench_stub_never_called;' > "$work/stub.c"
for lib in cufft/libcufft.so.11 cusolver/libcusolver.so.11 cusparse/libcusparse.so.12; do
    mkdir -p "$stage/nvidia/$(dirname "$lib")/lib"
    gcc -shared -fPIC -o "$stage/nvidia/$(dirname "$lib")/lib/$(basename "$lib")" \
        -Wl,-soname,"$(basename "$lib")" "$work/stub.c"
done

# Three members, concatenated and cut: libtensorflow_cc.so.2 alone, the rest of the stage, the
# pure-Python dependencies.
xz -6 -T0 -c "$stage/tensorflow/libtensorflow_cc.so.2" > "$work/cc.xz"
rm "$stage/tensorflow/libtensorflow_cc.so.2"
tar -C "$stage" -cf - . | xz -6 -T0 > "$work/rest.tar.xz"
(cd "$site" && tar --exclude=__pycache__ -cf - absl absl_py-* astunparse astunparse-* certifi certifi-* \
    charset_normalizer charset_normalizer-* flatbuffers flatbuffers-* gast gast-* google google_pasta-* pasta \
    h5py h5py-* h5py.libs idna idna-* ml_dtypes ml_dtypes-* opt_einsum opt_einsum-* packaging packaging-* \
    protobuf-* requests requests-* six.py six-* termcolor termcolor-* typing_extensions.py typing_extensions-* \
    urllib3 urllib3-* wrapt wrapt-*) | xz -6 -T0 > "$work/core.tar.xz"
(cd "$site" && tar --exclude=__pycache__ -cf - numpy numpy-* numpy.libs scipy scipy-* scipy.libs matplotlib \
    matplotlib-* mpl_toolkits contourpy contourpy-* cycler cycler-* dateutil python_dateutil-* fontTools \
    fonttools-* kiwisolver kiwisolver-* PIL pillow-* pillow.libs pyparsing pyparsing-*) | xz -6 -T0 > "$work/sci.tar.xz"
rm -rf "$parts"
mkdir -p "$parts"
stat -c %s "$work/cc.xz" "$work/rest.tar.xz" "$work/core.tar.xz" | tr '\n' ' ' > "$parts/sizes"
cat "$work/cc.xz" "$work/rest.tar.xz" "$work/core.tar.xz" | split -b 60000000 -d -a 2 --numeric-suffixes=1 - "$parts/p"
mv "$work/sci.tar.xz" "$parts/"
ls -la "$parts"
