"""The Lorenz demo's profiles: which datasets, run specs and parameters `lfads-manager demo` builds.

`seed` reproduces the seed tree of the original run manager name for name (DESIGN.md §2).
`quick` is tuned so the queue trains it to a useful fit in a few minutes on 2 CPU cores;
its numbers are owned by whoever tunes the model (bench/lfads_lorenz.py measures them).
"""

from __future__ import annotations

from typing import Any

# Parameters use the original names (reference/run-manager.md §4); values are cast to the
# property's MATLAB type by RunParams, so hashes match the MATLAB tool.
SEED_PROFILE: dict[str, Any] = {
    "n_datasets": 4,
    # Lorenz generator size knobs (manager.lorenz.LorenzSizes); empty = the original's sizes.
    "lorenz": {},
    "collection": "exampleRun",
    # run spec name -> 1-based dataset indices, as in drive_script_stitching.m
    "run_specs": {
        "all": [1, 2, 3],
        "single_dataset001": [1],
        "single_dataset002": [2],
        "single_dataset003": [3],
    },
    "params": {
        "spikeBinMs": 2,
        "c_co_dim": 0,
        "c_batch_size": 150,
        "c_factors_dim": 8,
        "c_gen_dim": 64,
        "c_ic_enc_dim": 64,
        "c_learning_rate_stop": 1e-3,
        "useAlignmentMatrix": True,
    },
}

QUICK_PROFILE: dict[str, Any] = {
    "n_datasets": 2,
    # 5 ms input bins keep the export small (spikeBinMs must stay a multiple of 5).
    "lorenz": {"bin_ms": 5},
    "collection": "lorenzQuick",
    "run_specs": {
        "single_dataset001": [1],
    },
    "params": {
        "spikeBinMs": 20,
        "c_co_dim": 0,
        "c_batch_size": 50,
        "c_factors_dim": 8,
        "c_gen_dim": 64,
        "c_ic_enc_dim": 64,
        "c_ic_dim": 32,
        "c_learning_rate_stop": 1e-3,
        "c_kl_increase_steps": 200,
        "c_l2_increase_steps": 200,
        "c_max_epochs": 80,
        "c_seed": 0,
        "num_samples_posterior": 64,
    },
}

PROFILES: dict[str, dict[str, Any]] = {"seed": SEED_PROFILE, "quick": QUICK_PROFILE}
