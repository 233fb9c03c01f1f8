"""Device choice: honour --device, CUDA_VISIBLE_DEVICES and memory growth; fall back to CPU."""

from __future__ import annotations

import os

import tensorflow as tf

from lfads.flags import device_kind_and_index


def configure_device(requested: str, allow_growth: bool) -> str:
    """-> a tf.device string. Must run before TensorFlow touches a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    # The queue sets TF_FORCE_GPU_ALLOW_GROWTH=true so several runs can share one GPU.
    if allow_growth or os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH", "").lower() == "true":
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:
                pass  # already initialised: growth cannot change any more, and that is not fatal
    kind, index = device_kind_and_index(requested) or ("cpu", 0)  # check_flags refused what does not parse
    if kind == "gpu":
        if index < len(gpus):
            return f"/GPU:{index}"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        print(f"No GPU {index} visible{where}; running on /cpu:0 instead of --device={requested}.", flush=True)
    return "/CPU:0"
