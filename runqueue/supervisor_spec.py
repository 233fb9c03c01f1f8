"""What a queue tells a run's supervisor: where it runs and under which policy (JSON on argv).

Shared by every executor (local now, SLURM later) and the supervisor; nothing else crosses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepIdentity:
    """Who the steps run as. The shared-box service will pass the run folder's owner here."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class SupervisorSpec:
    run_dir: str
    device_uuid: str
    device_name: str
    device_env: dict[str, str]
    device_index: int | None = None  # a GPU's NVML index (nvidia-smi's numbering), beside its UUID
    max_attempts: int = 2
    retry_backoff_s: float = 10.0
    time_limit_s: float | None = None
    kill_grace_s: float = 10.0
    queue_id: str = ""
    device_free_mb: int | None = None
    identity: StepIdentity | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    claims_dir: str | None = None  # where the queue keeps its device claim of this run (local executor)
    # The SLURM submission this supervisor carries out (set by its job); None: started by a local queue.
    batch_token: str | None = None

    def to_argv_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SupervisorSpec:
        record: dict[str, Any] = json.loads(text)
        identity = record.pop("identity", None)
        if identity is not None:
            identity = StepIdentity(int(identity["uid"]), int(identity["gid"]), tuple(identity.get("groups", ())))
        return cls(identity=identity, **record)
