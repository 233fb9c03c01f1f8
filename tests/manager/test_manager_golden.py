"""Golden files for generated text: the seed's step scripts and summary.txt, byte for byte.

When a change to the generated text is intended, accept it with
    UPDATE_GOLDEN=1 .venv/bin/pytest tests/manager/test_manager_golden.py
and review the diff of tests/manager/golden/ in the commit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"
FILES = {
    "seed_all_lfads_train.sh": "param_Qr2PeG/all/lfads_train.sh",
    "seed_all_lfads_posterior_mean_sample.sh": "param_Qr2PeG/all/lfads_posterior_mean_sample.sh",
    "seed_single_lfads_write_model_params.sh": "param_Qr2PeG/single_dataset001/lfads_write_model_params.sh",
    "seed_summary.txt": "summary.txt",
}


def normalised(text: str, tmp_path: Path) -> str:
    """Machine-specific parts replaced by placeholders."""
    return text.replace(os.path.abspath(sys.executable), "<PYTHON>").replace(str(tmp_path), "<DIR>")


def test_generated_text_matches_golden(seed_demo, tmp_path):
    changed = []
    for golden, generated in FILES.items():
        text = normalised((seed_demo.path / generated).read_text(), tmp_path)
        path = GOLDEN / golden
        if os.environ.get("UPDATE_GOLDEN") == "1":
            path.write_text(text)
        assert path.exists(), f"missing {path}; create it with UPDATE_GOLDEN=1"
        if text != path.read_text():
            changed.append(generated)
    assert not changed, f"{changed} changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"
