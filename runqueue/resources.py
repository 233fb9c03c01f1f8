"""Per-run resource declarations: `runqueue.json` written by the manager, else the queue's flags."""

from __future__ import annotations

import json
from dataclasses import dataclass

from runqueue.atomicio import NotAPlainFile, parse_json, read_small_file
from runqueue.durations import parse_duration
from runqueue.errors import RunqueueError
from runqueue.layout import RESOURCES_FILE, RESOURCES_WRITER_KEY, RunPaths

_VALID_KEYS = ("memory_mb", "time_limit")


@dataclass(frozen=True)
class RunResources:
    memory_mb: int
    time_limit_s: float | None


def load_resources(paths: RunPaths, default_memory_mb: int, default_time_limit_s: float | None) -> RunResources:
    """The run's declared memory and time limit; a bad file is a RunqueueError naming it and the fix."""
    if not paths.resources.exists():
        return RunResources(default_memory_mb, default_time_limit_s)
    example = '{"memory_mb": 4000, "time_limit": "2h"}'
    try:
        record = parse_json(read_small_file(paths.resources))
    except NotAPlainFile as error:
        raise RunqueueError(paths.resources, f"is {error.strerror}", f"replace it with a small file like {example}, or delete it") from None
    except OSError as error:
        raise RunqueueError(paths.resources, f"cannot be read ({error.strerror})", "make it readable by the queue's user") from None
    except ValueError as error:  # JSONDecodeError, bytes that are not text, nesting too deep
        where = f" at line {error.lineno} column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        raise RunqueueError(paths.resources, f"is not valid JSON{where}", f"write e.g. {example} or delete it") from None
    if not isinstance(record, dict):
        raise RunqueueError(paths.resources, "is not a JSON object", f"write e.g. {example} or delete it")
    unknown = sorted(set(record) - set(_VALID_KEYS) - {RESOURCES_WRITER_KEY})
    if unknown:
        raise RunqueueError(paths.resources, f"unknown key(s) {', '.join(unknown)}",
                            f"valid keys: {', '.join(_VALID_KEYS)} (and {RESOURCES_WRITER_KEY}, which the queue ignores)")
    memory = record.get("memory_mb", default_memory_mb)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
        raise RunqueueError(paths.resources, f"memory_mb must be a non-negative integer (MB), got {memory!r}", f"e.g. {example}")
    time_limit = default_time_limit_s
    if record.get("time_limit") is not None:
        try:
            time_limit = parse_duration(record["time_limit"])
        except ValueError as error:
            raise RunqueueError(paths.resources, str(error), f"e.g. {example}") from None
    return RunResources(memory, time_limit)


__all__ = ["RESOURCES_FILE", "RunResources", "load_resources"]
