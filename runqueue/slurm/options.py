"""What a user asks of SLURM (`--slurm-*` flags), and how a time limit becomes sbatch's and the supervisor's.

The run's own time limit (`--time-limit` or its runqueue.json) is enforced by the supervisor
inside the job, exactly as locally; SLURM gets a limit a little longer (rounded up to whole
minutes, SLURM's granularity), so that the supervisor stops the steps, writes lfads.out and the
markers before SLURM's TIMEOUT kills everything without a word.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass

from runqueue.durations import parse_duration

# Start-up of the job's Python, then the supervisor stopping the steps (kill grace) and
# writing its records: SLURM's limit is this much longer than the supervisor's.
_SLURM_MARGIN_S = 30.0
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
# Options the executor sets itself or relies on, each with what it is set to and why: changing
# them would break the run-folder contract (where the job runs and writes, how it is found again,
# that sbatch prints the job id).
_RESERVED_LONG: dict[str, str] = {
    "--chdir": "runqueue sets --chdir itself, to the run folder: the job's supervisor and the steps run there",
    "--output": "runqueue sets --output itself, to <run>/.runqueue/slurm-%j.out: the job's own messages go there"
                " (a job that fails before its supervisor starts is explained there)",
    "--error": "runqueue leaves the job's stderr with --output, in <run>/.runqueue/slurm-%j.out: a job that fails"
               " before its supervisor starts is explained there, and lfads.failed points there",
    "--open-mode": "runqueue sets --open-mode itself, to append: a job SLURM requeues adds to its"
                   " .runqueue/slurm-%j.out instead of wiping what the first start wrote",
    "--comment": "runqueue sets --comment itself, to runqueue:<token>: that is how a queue finds the run's job"
                 " again when sbatch's job id never reached .runqueue/slurm.json",
    "--parsable": "runqueue passes --parsable itself, to read the job id sbatch prints",
    "--wrap": "runqueue submits its own batch script (<run>/.runqueue/slurm-job.sh, which runs the run's"
              " supervisor); --wrap would replace it",
    "--array": "runqueue submits one job per attempt of a run; an array would start the run's supervisor"
               " several times",
    "--quiet": "runqueue reads the job id sbatch prints; --quiet hides it",
    "--test-only": "runqueue reads the job id of a job sbatch submits; --test-only submits nothing",
    "--wait": "runqueue watches its jobs itself; with --wait sbatch would not return until the job ends",
    "--clusters": "runqueue asks squeue, scontrol and scancel about its jobs on the local cluster only; a job"
                  " on another cluster would be taken for lost",
    "--time": "give the job's time with --slurm-time: runqueue sets --time from it with a margin, so the run's"
              " supervisor stops the run and records it before SLURM kills the job",
}
_RESERVED_LETTERS: dict[str, str] = {"D": "--chdir", "o": "--output", "a": "--array", "e": "--error", "Q": "--quiet",
                                     "t": "--time", "W": "--wait", "M": "--clusters"}
_FLAG_LETTERS = frozenset("HhIkOsuvV")  # sbatch's short options without an argument (and -W, refused)


@dataclass(frozen=True)
class SlurmOptions:
    """`runqueue run --executor slurm` knobs; None leaves the choice to the cluster's defaults."""

    gpus: int = 1  # per job, as --gres=gpu:N; 0 = CPU-only job
    partition: str | None = None
    time_s: float | None = None  # --slurm-time; default: the run's time limit plus a margin
    mem_mb: int | None = None
    cpus: int | None = None  # --cpus-per-task
    extra: tuple[str, ...] = ()  # raw sbatch arguments, after ours (so they win)
    max_submitted: int | None = None  # jobs of this queue in SLURM (pending + running) at once

    def asked(self) -> str:
        """The resources this queue asks SLURM for, as the flags that set them (for refusal messages)."""
        given = [f"--slurm-gpus {self.gpus}"]
        given += [f"{flag} {value}" for flag, value in (("--slurm-partition", self.partition), ("--slurm-time", None if self.time_s is None else f"{self.time_s:g}s"),
                                                        ("--slurm-mem", self.mem_mb), ("--slurm-cpus", self.cpus)) if value is not None]
        if self.extra:
            given.append("--slurm-extra=" + " ".join(self.extra))
        return ", ".join(given)

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"--slurm-gpus {self.gpus}: must be 0 or more (0 = CPU-only jobs)")
        for arg in self.extra:
            # sbatch (getopt_long) also takes an unambiguous prefix (--out= is --output=) and groups
            # of short options (-so/path is -s -o /path).
            reason = _reserved_long(arg) if arg.startswith("--") else _reserved_short(arg)
            if reason is not None:
                raise ValueError(f"--slurm-extra {arg!r}: {reason}; remove it from --slurm-extra")


def _reserved_long(arg: str) -> str | None:
    """Why `--name[=value]` is refused, when `--name` is a reserved option or a prefix of one (or several)."""
    name = arg.split("=", 1)[0]
    if len(name) <= 2:
        return None
    matches = [option for option in _RESERVED_LONG if option.startswith(name)]
    if not matches:
        return None
    reasons = "; ".join(_RESERVED_LONG[option] for option in matches)
    if matches == [name]:
        return reasons
    return f"{name} is short for {' or '.join(matches)}: {reasons}"


def _reserved_short(arg: str) -> str | None:
    """Why a `-xyz` group is refused: the reserved option it holds before the first letter that takes an argument."""
    if not arg.startswith("-") or len(arg) < 2:
        return None
    for letter in arg[1:]:
        if letter in _RESERVED_LETTERS:
            option = _RESERVED_LETTERS[letter]
            return f"-{letter} is {option}: {_RESERVED_LONG[option]}"
        if letter not in _FLAG_LETTERS:
            return None  # the rest of the group is that option's argument
    return None


@dataclass(frozen=True)
class TimeLimits:
    sbatch_minutes: int | None  # --time for sbatch; None: the partition's default
    supervisor_s: float | None  # what the supervisor enforces on each attempt


def parse_slurm_time(text: str) -> float:
    """Seconds in a SLURM time ("90" minutes, "1:30:00", "2-0", "2-12:00") or a duration ("2h", "90m")."""
    cleaned = text.strip()
    match = _SLURM_TIME.match(cleaned)
    if match is None:
        try:
            return parse_duration(cleaned)
        except ValueError:
            raise ValueError(
                f"invalid --slurm-time {text!r}: use SLURM's forms (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM:SS) or e.g. 2h, 90m"
            ) from None
    days, first, second, third = match.groups()
    numbers = [int(part) for part in (first, second, third) if part is not None]
    if days is not None:
        # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = [*numbers, 0, 0][:3]
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif len(numbers) == 1:
        total = numbers[0] * 60  # plain number: minutes, as sbatch reads it
    elif len(numbers) == 2:
        total = numbers[0] * 60 + numbers[1]
    else:
        total = numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    if total <= 0:
        raise ValueError(f"invalid --slurm-time {text!r}: must be positive")
    return float(total)


def job_time_limits(run_limit_s: float | None, slurm_time_s: float | None, kill_grace_s: float) -> TimeLimits:
    """SLURM's limit and the supervisor's, so that the supervisor always stops first.

    Only a run limit: SLURM gets it plus the margin, rounded up to minutes. Only --slurm-time:
    the supervisor stops the margin before it. Both: SLURM gets --slurm-time, the supervisor the
    smaller of the run limit and --slurm-time less the margin.
    """
    margin = kill_grace_s + _SLURM_MARGIN_S
    if slurm_time_s is None:
        if run_limit_s is None:
            return TimeLimits(None, None)
        return TimeLimits(math.ceil((run_limit_s + margin) / 60.0), run_limit_s)
    minutes = max(1, math.ceil(slurm_time_s / 60.0))
    room = minutes * 60.0 - margin
    if room <= 0:
        room = minutes * 60.0 / 2  # a tiny --slurm-time: still stop well before SLURM does
    return TimeLimits(minutes, room if run_limit_s is None else min(run_limit_s, room))


def format_sbatch_time(minutes: int) -> str:
    """`--time` text: H:MM:00, or D-HH:MM:00 from a day on."""
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{mins:02d}:00"
    return f"{hours}:{mins:02d}:00"


def split_extra(text: str) -> tuple[str, ...]:
    """`--slurm-extra "--account=lab --qos=long"` as sbatch arguments (shell quoting rules)."""
    try:
        return tuple(shlex.split(text))
    except ValueError as error:
        raise ValueError(f"--slurm-extra {text!r}: {error}; quote it as you would on a shell command line") from None
