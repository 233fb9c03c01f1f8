"""`runqueue serve --config FILE`: the service's TOML file, checked before anything starts.

The keys are the `runqueue run` flags with underscores (`max_per_gpu` for `--max-per-gpu`), plus
`roots`; not `watch` (always on) nor `stop_runs` (a stopping service leaves runs to their
supervisors). Relative paths are taken from the file's folder, so a config can travel with its runs.

    roots = ["/data/lfads/runs"]
    max_per_gpu = 2
    memory_per_run = 4000
    time_limit = "12h"
    executor = "slurm"        # optional; then an optional [slurm] table, the --slurm-* flags:
    [slurm]
    gpus = 1                  # --slurm-gpus
    partition = "gpu"         # --slurm-partition
    time = "12:00:00"         # --slurm-time
    mem_mb = 32000            # --slurm-mem
    cpus = 4                  # --slurm-cpus
    extra = ["--account=lab"] # --slurm-extra (a list, or one string split like a shell line)
    max_submitted = 50        # --max-submitted
"""

from __future__ import annotations

import math
import shlex
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from runqueue.durations import LONGEST_GRACE_S, LONGEST_S, parse_duration, parse_wait
from runqueue.errors import RunqueueError
from runqueue.layout import DEFAULT_MEMORY_MB
from runqueue.slurm.options import SlurmOptions, parse_slurm_time, split_extra


class ConfigError(RunqueueError, ValueError):
    """The service config cannot be used as written; one line naming the file and the fix."""


@dataclass(frozen=True)
class ServiceConfig:
    """What `runqueue serve` runs with. None means "the queue's own default"."""

    roots: tuple[Path, ...]
    gpus: str | None = None
    simulate_gpus: Path | None = None
    cpu_slots: int | None = None
    max_per_gpu: int = 1
    memory_per_run: int = DEFAULT_MEMORY_MB
    retries: int = 1
    retry_backoff: float | None = None  # seconds before the first retry (0 allowed)
    kill_grace: float | None = None  # seconds between SIGTERM and SIGKILL when stopping a run
    time_limit: float | None = None  # seconds; the file may say "12h", "90m", "1h30m" or a number
    foreign: Literal["block", "share"] = "block"
    poll_interval: float | None = None  # seconds between periodic rescans
    quiet: bool = False
    executor: Literal["local", "slurm"] = "local"
    claims_dir: Path | None = None
    slurm: SlurmOptions | None = None  # the [slurm] table; only with executor = "slurm"

    def to_argv(self) -> list[str]:
        """The same settings as `runqueue run --watch` arguments, for a CLI that parses flags once."""
        argv = [str(root) for root in self.roots] + ["--watch"]
        options: list[tuple[str, object]] = [
            ("--gpus", self.gpus),
            ("--simulate-gpus", self.simulate_gpus),
            ("--cpu-slots", self.cpu_slots),
            ("--max-per-gpu", self.max_per_gpu),
            ("--memory-per-run", self.memory_per_run),
            ("--retries", self.retries),
            ("--retry-backoff", None if self.retry_backoff is None else f"{self.retry_backoff:g}"),
            ("--kill-grace", None if self.kill_grace is None else f"{self.kill_grace:g}"),
            ("--time-limit", None if self.time_limit is None else f"{self.time_limit:g}"),
            ("--foreign", self.foreign),
            ("--poll-interval", None if self.poll_interval is None else f"{self.poll_interval:g}"),
            ("--executor", self.executor),
        ]
        for flag, value in options:
            if value is not None:
                argv += [flag, str(value)]
        if self.quiet:
            argv.append("--quiet")
        if self.slurm is not None:
            slurm: list[tuple[str, object]] = [
                ("--slurm-gpus", self.slurm.gpus),
                ("--slurm-partition", self.slurm.partition),
                ("--slurm-time", None if self.slurm.time_s is None else f"{self.slurm.time_s:g}s"),
                ("--slurm-mem", self.slurm.mem_mb),
                ("--slurm-cpus", self.slurm.cpus),
                ("--max-submitted", self.slurm.max_submitted),
            ]
            argv += [f"{flag}={value}" for flag, value in slurm if value is not None]
            if self.slurm.extra:
                argv.append("--slurm-extra=" + shlex.join(self.slurm.extra))
        return argv


VALID_KEYS = tuple(field.name for field in fields(ServiceConfig))
_SLURM_KEYS = ("gpus", "partition", "time", "mem_mb", "cpus", "extra", "max_submitted")


def load_service_config(path: Path | str) -> ServiceConfig:
    """Read and check `path`; ConfigError (one line: file, problem, fix) on anything wrong."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "config file not found", "pass an existing file to --config") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a folder, not a config file", "pass the TOML file to --config") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "is not UTF-8 text", "pass the TOML file to --config") from None
    except OSError as err:
        raise ConfigError(path, f"cannot read config file ({err.strerror})", "check its permissions") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, f"not valid TOML: {err}", "fix the syntax") from None
    unknown = sorted(set(data) - set(VALID_KEYS))
    if unknown:
        raise ConfigError(path, f"unknown key(s) {', '.join(map(repr, unknown))}",
                          f"valid keys: {', '.join(VALID_KEYS)}; use underscores, e.g. max_per_gpu")
    return _Checker(path, data).config()


# Settings of this machine's devices: what a SLURM executor does not use, and what `status` judges
# waiting runs by.
LOCAL_DEVICE_KEYS = ("gpus", "simulate_gpus", "cpu_slots", "max_per_gpu", "memory_per_run", "foreign")


class _Checker:
    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.base = path.resolve().parent

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, f"{key}: {problem}", "fix that key or remove it to use the default")

    def config(self) -> ServiceConfig:
        values: dict[str, Any] = {"roots": self.roots()}
        for key in ("cpu_slots", "retries", "memory_per_run"):  # as on the command line: 0 allowed
            self._maybe(values, key, self.integer(key, minimum=0))
        self._maybe(values, "max_per_gpu", self.integer("max_per_gpu", minimum=1))
        self._maybe(values, "retry_backoff", self.seconds("retry_backoff"))
        self._maybe(values, "kill_grace", self.seconds("kill_grace", LONGEST_GRACE_S))
        self._maybe(values, "gpus", self.gpu_list("gpus"))
        for key in ("simulate_gpus", "claims_dir"):
            text = self.text(key)
            self._maybe(values, key, None if text is None else self.base / Path(text).expanduser())
        self._maybe(values, "foreign", self.choice("foreign", ("block", "share")))
        self._maybe(values, "executor", self.choice("executor", ("local", "slurm")))
        self._maybe(values, "time_limit", self.duration("time_limit"))
        self._maybe(values, "poll_interval", self.duration("poll_interval"))
        self._maybe(values, "slurm", self.slurm(values.get("executor", "local")))
        if values.get("executor") == "slurm":  # as on the command line: an error, not silently ignored
            local = [key for key in LOCAL_DEVICE_KEYS if key in values]
            if local:
                raise ConfigError(self.path, f"{', '.join(local)}: only {'applies' if len(local) == 1 else 'apply'} to this"
                                  " machine's devices, and SLURM picks the devices of its jobs",
                                  "remove them, or ask SLURM through the [slurm] table (gpus, extra)")
        if "quiet" in self.data:
            if not isinstance(self.data["quiet"], bool):
                raise self.fail("quiet", "must be true or false")
            values["quiet"] = self.data["quiet"]
        return ServiceConfig(**values)

    @staticmethod
    def _maybe(values: dict[str, Any], key: str, value: object) -> None:
        if value is not None:
            values[key] = value

    def slurm(self, executor: str) -> SlurmOptions | None:
        table = self.data.get("slurm")
        if table is None:
            return None
        if not isinstance(table, dict):
            raise self.fail("slurm", "must be a table: [slurm] followed by gpus = 1, partition = ..., ...")
        if executor != "slurm":
            raise self.fail("slurm", 'only applies to SLURM jobs; add executor = "slurm" or remove the [slurm] table')
        unknown = sorted(set(table) - set(_SLURM_KEYS))
        if unknown:
            raise ConfigError(self.path, f"[slurm]: unknown key(s) {', '.join(map(repr, unknown))}",
                              f"valid keys: {', '.join(_SLURM_KEYS)}")
        # Checked like top-level keys, named slurm.<key> in messages.
        sub = _Checker(self.path, {f"slurm.{key}": value for key, value in table.items()})
        gpus = sub.integer("slurm.gpus", minimum=0)
        try:
            return SlurmOptions(
                gpus=1 if gpus is None else gpus,
                partition=sub.text("slurm.partition"),
                time_s=sub.slurm_time("slurm.time"),
                mem_mb=sub.integer("slurm.mem_mb", minimum=1),
                cpus=sub.integer("slurm.cpus", minimum=1),
                extra=sub.sbatch_args("slurm.extra"),
                max_submitted=sub.integer("slurm.max_submitted", minimum=1),
            )
        except ValueError as err:
            raise self.fail("slurm", str(err)) from None

    def slurm_time(self, key: str) -> float | None:
        """A SLURM time ("12:00:00", "2-0", "2h") or a number of minutes, as sbatch --time reads it."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float) or (
                not isinstance(value, str) and not 0 < value < math.inf):  # NaN fails this too
            raise self.fail(key, f'must be a SLURM time such as "12:00:00" or "2h", or minutes, got {value!r}')
        try:
            return parse_slurm_time(value) if isinstance(value, str) else float(value) * 60
        except ValueError as err:
            raise self.fail(key, str(err)) from None

    def sbatch_args(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if value is None:
            return ()
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        if isinstance(value, str):
            try:
                return split_extra(value)
            except ValueError as err:
                raise self.fail(key, str(err)) from None
        raise self.fail(key, f"must be a list of sbatch arguments or one string, got {value!r}")

    def roots(self) -> tuple[Path, ...]:
        raw = self.data.get("roots")
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw or not all(isinstance(item, str) and item for item in raw):
            raise ConfigError(self.path, "roots: must be a non-empty list of folders",
                              'e.g. roots = ["/data/lfads/runs"]')
        roots = tuple(self.base / Path(item).expanduser() for item in raw)
        for root in roots:
            if root.exists() and not root.is_dir():
                raise ConfigError(self.path, f"roots: {root} is a file, not a folder", "give the runs folder that holds it")
        # One user's missing tree (an automount not up yet, a folder moved) must not keep the service
        # from serving the others: it is watched for. Only a config that serves nothing is refused.
        if not any(root.is_dir() for root in roots):
            raise ConfigError(self.path, f"roots: no such folder {', '.join(map(str, roots))}",
                              "create it, mount it, or remove it from roots")
        return roots

    def integer(self, key: str, minimum: int) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(key, f"must be a whole number >= {minimum}, got {value!r}")
        return value

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def gpu_list(self, key: str) -> str | None:
        """`gpus = "0,1"` as on the command line, and what TOML makes natural: `gpus = 0`, `gpus = [0, 1]`,
        `gpus = ["GPU-…", "GPU-…"]`."""
        value = self.data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return str(value)
        if isinstance(value, list) and value and all(
                (isinstance(item, int) and not isinstance(item, bool) and item >= 0) or (isinstance(item, str) and item.strip())
                for item in value):
            return ",".join(str(item).strip() for item in value)
        if value is None or (isinstance(value, str) and value.strip()):
            return self.text(key)
        raise self.fail(key, f'must be GPU indices or UUIDs, e.g. gpus = [0, 1] or gpus = "0,1" or gpus = "none"; got {value!r}')

    def choice(self, key: str, allowed: tuple[str, ...]) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if value not in allowed:
            raise self.fail(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def seconds(self, key: str, longest: float = LONGEST_S) -> float | None:
        """A wait in seconds that may be 0 (a number, or a duration such as "30s")."""
        value = self.data.get(key)
        if value is None:
            return None
        try:
            return parse_wait(value, longest)
        except ValueError as err:
            raise self.fail(key, str(err)) from None

    def duration(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, f'must be a duration such as "90m", "12h" or a number of seconds, got {value!r}')
        try:
            return parse_duration(value)
        except ValueError as err:
            raise self.fail(key, str(err)) from None
