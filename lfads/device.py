"""Device choice: honour --device, CUDA_VISIBLE_DEVICES and memory growth; fall back to CPU."""

from __future__ import annotations

import os

import tensorflow as tf


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
    spec = requested.strip().lower().lstrip("/").removeprefix("device:")
    kind, _, index_text = spec.partition(":")
    index = int(index_text) if index_text.isdigit() else 0
    if kind == "gpu":
        if index < len(gpus):
            return f"/GPU:{index}"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        print(f"No GPU {index} visible{where}; running on /cpu:0 instead of --device={requested}.", flush=True)
    return "/CPU:0"
