"""How long `prepare()` takes for 4 datasets x 4 run specs x 20 param sets, and how it grows to 200.

Data export must not grow with the number of param sets (it happens once per data hash + run spec);
everything else (hashing, scripts, symlinks, summary) should grow about linearly. Prints seconds and
ratios measured in this one process, so the numbers are comparable with each other only.

    .venv/bin/python bench/prepare.py [--small]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from manager.collection import RunCollection
from manager.datasets import DatasetCollection
from manager.lorenz import LorenzSizes, generate_lorenz_datasets
from manager.params import RunParams
from manager.prepare import PrepareReport
from manager.runspec import RunSpec

SPECS = {"all": [0, 1, 2, 3], "pair": [0, 1], "single_dataset001": [0], "single_dataset002": [1]}


def param_grid(n_sets: int) -> list[RunParams]:
    """n_sets param sets that differ only in LFADS-internal values (so they share one data hash)."""
    base = RunParams(spikeBinMs=10, c_co_dim=0, c_batch_size=50, c_factors_dim=8, useAlignmentMatrix=True)
    grid = base.sweep(c_gen_dim=range(32, 32 + n_sets // 4), c_keep_prob=[0.9, 0.95, 0.97, 0.99])
    assert len({p.data_hash for p in grid}) == 1 and len(grid) == n_sets
    return grid


def build(root: Path, datasets: DatasetCollection, n_sets: int) -> RunCollection:
    collection = RunCollection(root, f"bench{n_sets}", datasets)
    collection.add_params(param_grid(n_sets))
    for name, indices in SPECS.items():
        collection.add_run_spec(RunSpec(name, datasets, indices))
    return collection


def timed(collection: RunCollection) -> tuple[float, PrepareReport]:
    started = time.perf_counter()
    report = collection.prepare()
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small datasets (a quick smoke run)")
    args = parser.parse_args()
    # Full-size Lorenz trials (65 conditions, 1 s) in 5 ms bins, like the quick demo profile.
    sizes = LorenzSizes(n_conditions=20, n_time=300) if args.small else LorenzSizes(bin_ms=5)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        paths = generate_lorenz_datasets(root / "datasets", n_datasets=4, sizes=sizes)
        print(f"generated 4 Lorenz datasets in {time.perf_counter() - started:.1f} s")
        datasets = DatasetCollection(root / "datasets")
        datasets.add_files([p.name for p in paths])

        # Warm-up (imports, page cache) in its own tree, so the first measurement is not penalised.
        timed(build(root / "warmup", datasets, 4))
        rows = {}
        for n_sets in (20, 200):
            collection = build(root / "runs", datasets, n_sets)
            total, report = timed(collection)
            again, repeat = timed(build(root / "runs", datasets, n_sets))
            assert not repeat.files_written, "an unchanged collection must not be rewritten"
            rows[n_sets] = (len(collection.runs), total, report.export_seconds, report.other_seconds, again)
        print(f"{'param sets':>10} {'runs':>5} {'total s':>8} {'export s':>9} {'rest s':>7} {'rest ms/run':>12} {'re-prepare s':>13}")
        for n_sets, (runs, total, export, rest, again) in rows.items():
            print(f"{n_sets:>10} {runs:>5} {total:>8.2f} {export:>9.2f} {rest:>7.2f} {1000 * rest / runs:>12.2f} {again:>13.2f}")
        small, big = rows[20], rows[200]
        print(f"ratio 200/20: export x{big[2] / small[2]:.2f} (should stay ~1), rest x{big[3] / small[3]:.1f} "
              f"(10x more runs), re-prepare x{big[4] / small[4]:.1f}")


if __name__ == "__main__":
    main()
