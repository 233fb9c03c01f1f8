"""The identity a run's steps execute under is a parameter of the supervisor (for the shared-box service)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from runqueue_testkit import make_run, read_json

from runqueue.supervisor_spec import StepIdentity, SupervisorSpec


@pytest.mark.skipif(os.geteuid() != 0, reason="running steps as another user needs root")
def test_runqueue_steps_run_as_the_identity_in_the_spec() -> None:
    nobody = pwd.getpwnam("nobody")
    # Not under tmp_path: its parents are private to root, and the step must be able to enter the folder.
    base = Path(tempfile.mkdtemp(prefix="runqueue-identity-"))
    try:
        base.chmod(0o755)
        run = make_run(base, "run", "id -u; id -g\n")
        spec = SupervisorSpec(
            run_dir=str(run), device_uuid="cpu-0", device_name="CPU slot 0", device_env={"CUDA_VISIBLE_DEVICES": ""},
            identity=StepIdentity(nobody.pw_uid, nobody.pw_gid, ()),
        )
        result = subprocess.run([sys.executable, "-m", "runqueue.supervisor", "--spec", spec.to_argv_json()], timeout=60)
        assert result.returncode == 0
        lines = (run / "lfads.out").read_text().splitlines()
        assert lines[1:3] == [str(nobody.pw_uid), str(nobody.pw_gid)]
        assert read_json(run / "lfads.done")["attempt"] == 1
    finally:
        shutil.rmtree(base)
