"""Per-dataset read-in (channels -> encoder input) and read-out (factors -> output parameters).

Stitching (reference §2): with several datasets, or an `alignment_matrix_cxf` in the file, the
read-in is affine and starts from the alignment matrix with bias -alignment_bias·W (PCA-style
centring); the read-out starts from its transpose with bias alignment_bias. A single session
without an alignment matrix reads in through an identity.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from lfads.config import ReadSpec
from lfads.model.linear import Identity, Linear


def make_readin(spec: ReadSpec, factors_dim: int, trainable: bool, matrix: np.ndarray | None,
                bias: np.ndarray | None, rng: np.random.Generator) -> tf.Module:
    if spec.readin_identity:
        return Identity()
    b_init = None
    if matrix is not None and bias is not None:
        b_init = -np.ravel(bias)[np.newaxis, :] @ matrix
    return Linear(f"LFADS/x_2_infac_{spec.name}", spec.data_dim, factors_dim, rng, w_init=matrix,
                  b_init=b_init, trainable=trainable)


class ReadOut(tf.Module):
    """factors -> poisson log-rates (B,T,D), or gaussian [means | logvars] (B,T,2D)."""

    def __init__(self, spec: ReadSpec, factors_dim: int, output_dist: str, matrix: np.ndarray | None,
                 bias: np.ndarray | None, rng: np.random.Generator) -> None:
        super().__init__(name=None)
        w_init = None if matrix is None else np.asarray(matrix).T
        b_init = None if bias is None else np.ravel(bias)
        scope = f"LFADS/glm/fac_2_{{}}_{spec.name}"
        self.logvars: Linear | None = None
        if output_dist == "poisson":
            self.main: tf.Module = (
                Identity() if spec.readout_identity
                else Linear(scope.format("logrates"), factors_dim, spec.data_dim, rng, w_init=w_init, b_init=b_init)
            )
        else:
            self.main = Linear(scope.format("means"), factors_dim, spec.data_dim, rng, w_init=w_init, b_init=b_init)
            self.logvars = Linear(scope.format("logvars"), factors_dim, spec.data_dim, rng,
                                  w_init=np.zeros((factors_dim, spec.data_dim), np.float32),
                                  b_init=np.ones((spec.data_dim,), np.float32))

    def __call__(self, factors: tf.Tensor) -> tf.Tensor:
        out = self.main(factors)
        if self.logvars is not None:
            out = tf.concat([out, self.logvars(factors)], axis=-1)
        return out
