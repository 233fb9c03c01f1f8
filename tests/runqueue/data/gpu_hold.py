"""Hold GPU memory for a while, as a run (or someone else's job) on a real GPU would.

    python gpu_hold.py RECORD.json MEGABYTES SECONDS [DELAY]

Waits DELAY seconds (a training run shows 0 MB to NVML while it starts up), allocates MEGABYTES on
the first visible CUDA device, holds it SECONDS, and writes RECORD.json with what the process saw:
CUDA_VISIBLE_DEVICES, the device count and UUID CUDA reports, and wall-clock times. Uses whichever of
torch, cupy or tensorflow is importable; exits 3 when none is (the GPU tests then skip).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

NO_BACKEND = 3


def _torch(megabytes: int) -> tuple[int, str, object]:
    import torch

    count = torch.cuda.device_count()
    uuid = str(getattr(torch.cuda.get_device_properties(0), "uuid", "")) if count else ""
    block = torch.empty(megabytes * 2**20, dtype=torch.uint8, device="cuda:0")
    block.fill_(1)
    torch.cuda.synchronize()
    return count, uuid, block


def _cupy(megabytes: int) -> tuple[int, str, object]:
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    raw = cupy.cuda.runtime.getDeviceProperties(0).get("uuid", b"") if count else b""
    hexed = raw.hex() if isinstance(raw, bytes) else ""
    uuid = "-".join((hexed[:8], hexed[8:12], hexed[12:16], hexed[16:20], hexed[20:])) if hexed else ""
    block = cupy.ones(megabytes * 2**20, dtype=cupy.uint8)
    cupy.cuda.Device(0).synchronize()
    return count, uuid, block


def _tensorflow(megabytes: int) -> tuple[int, str, object]:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    with tf.device("/GPU:0"):
        block = tf.ones([megabytes * 2**20], dtype=tf.uint8)
    return len(gpus), "", block


def main(argv: list[str]) -> int:
    record_path, megabytes, seconds = argv[0], int(argv[1]), float(argv[2])
    delay = float(argv[3]) if len(argv) > 3 else 0.0
    record: dict[str, Any] = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(), "started_at": time.time()}
    time.sleep(delay)
    for backend in (_torch, _cupy, _tensorflow):
        try:
            count, uuid, block = backend(megabytes)  # block stays referenced while held
        except ImportError:
            continue
        record.update(backend=backend.__name__.strip("_"), device_count=count, cuda_uuid=uuid)
        break
    else:
        print("gpu_hold: none of torch, cupy, tensorflow is importable", file=sys.stderr)
        return NO_BACKEND
    record["allocated_at"] = time.time()
    time.sleep(seconds)
    record["released_at"] = time.time()
    del block
    with open(record_path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(record_path + ".tmp", record_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
