"""Inside the SLURM job: check this job is the run's current submission, name the device, supervise.

The batch script `exec`s this module (see jobscript.py), so the supervisor *is* the job's batch
process: `scancel --batch --signal=USR1` reaches it as a cancel, `--signal=TERM` as an interrupt.
What it does is exactly what a local run does (runqueue.supervisor); only the device comes from
SLURM: `CUDA_VISIBLE_DEVICES` as slurmd set it, named by its UUID when NVML can resolve it here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runqueue.slurm.paths import SlurmPaths
from runqueue.slurm.records import JobReport, load_submission, record_found_job_id, save_job_report
from runqueue.supervisor import EXIT_ERROR, EXIT_NOT_STARTED, Supervisor
from runqueue.supervisor_spec import SupervisorSpec

QUEUE_ID_PREFIX = "slurm-job:"  # state.json's queue_id while this job's supervisor runs the run

_EXIT_MEANINGS = {0: "every step succeeded", 1: "failed, attempts used up", 2: "failed, the queue retries it",
                  3: "interrupted", 4: "cancelled", 5: "not started", 6: "run folder vanished", 7: "internal error"}


@dataclass(frozen=True)
class JobDevice:
    uuid: str  # a GPU UUID when NVML resolved it, else SLURM's index list; "cpu-slurm" for CPU jobs
    name: str
    env: dict[str, str]


def queue_id_of(job_id: int) -> str:
    return f"{QUEUE_ID_PREFIX}{job_id}"


def job_device(environ: Mapping[str, str], job_id: int) -> JobDevice:
    """The device SLURM gave this job, as the supervisor's header and state.json show it."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        # No GPU was requested (or the cluster sets nothing): hide any GPU the node has, as a
        # local CPU slot does, so TensorFlow does not grab a GPU this job does not own.
        return JobDevice("cpu-slurm", f"CPU, SLURM job {job_id}", {"CUDA_VISIBLE_DEVICES": ""})
    ids = [part.strip() for part in visible.split(",") if part.strip()]
    if not ids:
        return JobDevice("cpu-slurm", f"CPU, SLURM job {job_id}", {"CUDA_VISIBLE_DEVICES": ""})
    env = {"CUDA_VISIBLE_DEVICES": visible, "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
    resolved = _nvml_names(ids)
    if resolved is not None:
        return JobDevice(",".join(uuid for uuid, _ in resolved), ", ".join(dict.fromkeys(name for _, name in resolved)), env)
    return JobDevice(",".join(ids), f"SLURM GPU {','.join(ids)}", env)


def _nvml_names(ids: list[str]) -> list[tuple[str, str]] | None:
    """(UUID, name) for each id via NVML (indices in PCI order, as SLURM's gres/nvml numbers them); None if unresolvable."""
    try:
        from runqueue.devices.nvml import NvmlInventory
    except ImportError:
        return None
    try:
        devices = NvmlInventory(only=ids).read().devices
    except Exception:  # NVML is a nicety here: the job runs with SLURM's index whatever goes wrong
        return None
    if len(devices) != len(ids):
        return None
    return [(device.uuid, device.name) for device in devices]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    token = spec_text = None
    while args:
        flag = args.pop(0)
        if flag == "--token" and args:
            token = args.pop(0)
        elif flag == "--spec" and args:
            spec_text = args.pop(0)
        else:
            print(f"usage: python -m runqueue.slurm.job --token TOKEN --spec JSON (got {flag!r})", file=sys.stderr)
            return EXIT_ERROR
    if token is None or spec_text is None:
        print("usage: python -m runqueue.slurm.job --token TOKEN --spec JSON", file=sys.stderr)
        return EXIT_ERROR
    spec = SupervisorSpec.from_json(spec_text)
    job_id = int(os.environ.get("SLURM_JOB_ID", "0") or 0)
    paths = SlurmPaths.of(Path(spec.run_dir))
    record = load_submission(paths)
    if record is None or record.token != token:
        current = "none" if record is None else f"job {record.job_id}"
        _say(f"SLURM job {job_id} is not the current submission of {spec.run_dir} (.runqueue/slurm.json names {current}); nothing run")
        return EXIT_NOT_STARTED
    if not record.active:
        _say(f"SLURM job {job_id}'s submission of {spec.run_dir} was settled already ({record.ending}); nothing run")
        return EXIT_NOT_STARTED
    if record.stop_requested is not None:
        _say(f"a queue asked to {record.stop_requested} this run before SLURM started job {job_id}; nothing run")
        return EXIT_NOT_STARTED
    if record.job_id is None and job_id:
        # Its sbatch never answered the queue (timed out, or the queue died during it): say which
        # job this is, so that `status`, `cancel` and a stopping queue can name it without squeue.
        with contextlib.suppress(OSError):
            record_found_job_id(paths, token, job_id)
    device = job_device(os.environ, job_id)
    report = JobReport(
        job_id=job_id,
        token=token,
        host=socket.gethostname(),
        started_at=time.time(),
        device_uuid=device.uuid,
        device_name=device.name,
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    save_job_report(paths, report)
    spec = dataclasses.replace(
        spec, device_uuid=device.uuid, device_name=device.name, device_env=device.env, queue_id=queue_id_of(job_id),
        batch_token=token,
    )
    _say(f"SLURM job {job_id} on {report.host}: supervising {spec.run_dir} on {device.uuid} ({device.name})")
    code = Supervisor(spec, None).run()
    save_job_report(paths, dataclasses.replace(report, ended_at=time.time(), exit_status=code))
    _say(f"supervisor finished: exit status {code} ({_EXIT_MEANINGS.get(code, 'unknown')}); see lfads.out")
    return code


def _say(text: str) -> None:
    # stdout is SLURM's output file (.runqueue/slurm-<jobid>.out); the supervisor writes lfads.out.
    print(f"runqueue: {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
