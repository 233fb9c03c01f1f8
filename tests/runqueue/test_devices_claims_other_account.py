"""Claims: a claim name squatted by another account, seen from a
non-root queue (root ignores the sticky bit, so only a second account reaches the variant-name path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from runqueue.devices.claims import ClaimStore, claim_file_name
from runqueue.procinfo import boot_id, live_start_time

REPO = Path(__file__).resolve().parents[2]

AS_NOBODY = """
    import json, os, sys, time
    from pathlib import Path
    from runqueue.devices.claims import Claim, ClaimStore
    store = ClaimStore(Path(sys.argv[1]))
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    def claim(device, memory):
        return Claim(run_dir="/runs/a", device_uuid=device, memory_mb=memory, pid=os.getpid(), sid=os.getsid(0),
                     queue_id="nobody", created=time.time())
    with store.transaction() as txn:
        txn.add(claim("GPU-a", 2000))   # provisional claim ...
        txn.add(claim("GPU-b", 4000))   # ... handed over: it replaces the first one
        live = sorted((c.device_uuid, c.memory_mb) for c in txn.live_claims())
    store.remove("/runs/a")
    left = sorted(p.name for p in store.directory.glob("*-u65534*.claim.json") if p.stat().st_uid == 65534)
    print(json.dumps({"live": live, "left": left}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second user (uid 65534)")
def test_a_squatted_claim_name_still_gives_one_claim_per_run_that_remove_drops() -> None:
    shared = Path(tempfile.mkdtemp(prefix="devices-claims-"))
    try:
        shared.chmod(0o755)
        store = ClaimStore(shared / "claims")
        with store.transaction():
            pass  # the shared sticky directory
        squatted = store.directory / claim_file_name("/runs/a", 65534)  # the name nobody's claim would take
        squatted.write_text(json.dumps({"run_dir": "/runs/a", "device_uuid": "GPU-fake", "memory_mb": 1,
                                        "pid": os.getpid(), "sid": os.getsid(0), "queue_id": "x", "created": 0.0,
                                        "pid_start": live_start_time(os.getpid()), "boot": boot_id()}))
        squatted.chmod(0o644)  # root's file: nobody cannot replace it in the sticky directory
        other = subprocess.run([sys.executable, "-c", textwrap.dedent(AS_NOBODY), str(store.directory)],
                               cwd=REPO, text=True, capture_output=True, timeout=60)
        assert other.returncode == 0, other.stderr
        result = json.loads(other.stdout)
        assert result["live"] == [["GPU-b", 4000]]  # one claim, not the GPU charged twice; the squatter is no claim
        assert result["left"] == []  # the run's end removes nobody's own variant claim
        assert squatted.exists()
    finally:
        shutil.rmtree(shared)
