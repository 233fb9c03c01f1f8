"""A Python without the model's packages (a queue-only install): one line naming what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_python_without_absl_and_tensorflow_gets_one_line_naming_the_install() -> None:
    # -S: no site-packages, so neither absl nor TensorFlow (nor numpy) can be imported; the repository
    # itself comes from PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in (["--kind=train"], ["--help"]):
        result = subprocess.run([sys.executable, "-S", "-m", "lfads", *args], capture_output=True, text=True,
                                env=env, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"lfads: error: {sys.executable}: no module named 'absl'; ")
        assert "-m pip install 'tensorflow-cpu>=2.16' absl-py" in line
