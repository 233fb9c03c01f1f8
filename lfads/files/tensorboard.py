"""TensorBoard scalars in `lfads_log/`, with the original's tags.

TF1 wrote `tf.summary.scalar("KL cost (train)")` inside the `LFADS` scope; its tag cleaner
turned characters outside [-/\\w.] into '_' and the scope became a prefix. Values are written
as TF1 `simple_value` summaries, which every TensorBoard reads and which need no tensorboard
package at training time.
"""

from __future__ import annotations

import re
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from lfads.files.fitlog import EpochSummary

LOG_DIR = "lfads_log"


def tf1_tag(name: str) -> str:
    return "LFADS/" + re.sub(r"[^-/\w.]", "_", name)


class TensorBoardLog:
    def __init__(self, save_dir: Path) -> None:
        # Made here, as the umask allows: TensorFlow would make it 0755 whatever the umask (a lab
        # group sharing the run tree could not add its event files).
        (save_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        self.writer = tf.summary.create_file_writer(str(save_dir / LOG_DIR))

    def epoch(self, s: EpochSummary, learning_rate: float, grad_norm: float, corr_cost: float,
              ar_taus: list[float], ar_vars: list[float]) -> None:
        scalars: dict[str, float] = {
            "Learning rate": learning_rate, "KL weight": s.kl_weight, "L2 weight": s.l2_weight,
            "Corr cost": corr_cost, "Gradient global norm": grad_norm,
            "KL cost (train)": s.train_kl, "L2 cost": s.l2, "Reconstruction cost (train)": s.train_recon,
            "Total cost (train)": s.train_total,
        }
        for c, (tau, var) in enumerate(zip(ar_taus, ar_vars, strict=True)):
            scalars[f"AR Autocorrelation taus {c}"] = tau
            scalars[f"AR Variances {c}"] = var
        if s.valid_total is not None and s.valid_kl is not None and s.valid_recon is not None:
            scalars.update({"KL cost (valid)": s.valid_kl, "Reconstruction cost (valid)": s.valid_recon,
                            "Total cost (valid)": s.valid_total})
        proto = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tf1_tag(name), simple_value=float(value)) for name, value in scalars.items()
        ])
        with self.writer.as_default():
            tf.summary.experimental.write_raw_pb(tf.constant(proto.SerializeToString()), step=s.step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
