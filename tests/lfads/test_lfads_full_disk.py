"""HDF5 outputs on a full disk: an ordinary error naming the file, never a crashed process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WRITE = """
import sys, numpy as np
from {module} import {function}
rng = np.random.default_rng(0)
arrays = {{"output_dist_params": rng.random((400, 100, 50)), "factors": rng.random((400, 100, 8))}}
try:
    {function}(__import__("pathlib").Path(sys.argv[1]), arrays)
except OSError as error:
    print(f"OSError errno={{error.errno}} file={{error.filename}}")
    sys.exit(3)
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); needs root")
    yield small
    subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize(("module", "function"), [("lfads.files.model_runs", "write_model_runs"), ("manager.export", "write_lfads_h5")])
def test_an_h5_that_does_not_fit_is_an_oserror_naming_it(small_disk: Path, module: str, function: str) -> None:
    target = small_disk / "model_runs_ds.h5_valid_posterior_sample_and_average"
    result = subprocess.run([sys.executable, "-c", WRITE.format(module=module, function=function), str(target)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr  # not 139 (SIGSEGV) or a traceback
    assert f"OSError errno=28 file={target}" in result.stdout
    assert list(small_disk.iterdir()) == []  # no temp file left behind
