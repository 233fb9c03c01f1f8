"""XLA_FLAGS for one lfads process, settled before TensorFlow is imported (XLA reads them once).

The sampling kinds compile their function once and run it for well under a second on a GPU; XLA's
GEMM autotuning then costs more than the work. Measured on an H100 (bench/device/posterior_gpu.sh,
quick Lorenz run): the first compiled call of posterior_sample_and_average took 7.4-7.8 s with
autotuning and 4.5 s at --xla_gpu_autotune_level=0, the 26 calls after it 0.2 s either way.
Training keeps autotuning: it runs its compiled step thousands of times.
"""

from __future__ import annotations

SAMPLING_KINDS = ("posterior_sample_and_average", "posterior_push_mean", "prior_sample")
AUTOTUNE_FLAG = "--xla_gpu_autotune_level"


def xla_flags_for(kind: str, current: str) -> str:
    """`current` XLA_FLAGS plus autotuning off for the sampling kinds, unless they already set a level."""
    if kind not in SAMPLING_KINDS or AUTOTUNE_FLAG in current:
        return current
    return f"{current} {AUTOTUNE_FLAG}=0".strip()
