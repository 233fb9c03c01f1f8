"""`lfads` / `run_lfads.py` / `python -m lfads`: parse flags (no TensorFlow), then run one kind.

Exit status 0 only on success; every failure ends with one line starting `lfads: error:`.
A GPU out-of-memory failure says "CUDA out of memory" so the queue can tell it apart.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence

from lfads.errors import LfadsError
from lfads.xla_flags import xla_flags_for

HELP_FLAGS = ("-h", "--help", "--helpfull", "--helpshort", "--helpxml", "-?")


def _is_disk_full(err: BaseException) -> bool:
    # TensorFlow reports a full disk while saving as ResourceExhaustedError, like a full GPU.
    return (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
        text in str(err) for text in ("No space left on device", "Disk quota exceeded"))


def _is_out_of_memory(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}"
    return "ResourceExhausted" in text or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def _one_line_verdict(err: BaseException) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if _is_disk_full(err):
        where = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
        return f"{where}no space left on device ({type(err).__name__}: {first_line[:300]}); free space on that disk"
    if _is_out_of_memory(err):
        return (f"ResourceExhaustedError: CUDA out of memory ({first_line[:300]});"
                " lower --batch_size or run fewer models per GPU")
    return f"{type(err).__name__}: {first_line[:500]}"


def _import_tensorflow_quietly() -> None:
    """TensorFlow >= 2.16 prints absl/oneDNN start-up lines that no environment variable silences;
    hold stderr (the file descriptor) while importing, and replay it only if the import fails."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    tf.get_logger().setLevel("ERROR")


def _missing_model_dependency() -> str | None:
    """The first of the model's packages this Python lacks (a queue-only install has neither)."""
    return next((name for name in ("absl", "tensorflow") if importlib.util.find_spec(name) is None), None)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # the queue tees our output into lfads.out
    missing = _missing_model_dependency()
    if missing is not None:
        print(f"lfads: error: {sys.executable}: no module named {missing!r}; the model needs the package's `model`"
              f" extra: {sys.executable} -m pip install 'tensorflow-cpu>=2.16' absl-py tensorboard"
              " (tensorflow[and-cuda] instead of tensorflow-cpu on a GPU machine)", file=sys.stderr)
        return 1
    from lfads.app_flags import post_mortem_if_asked, run_as_asked
    from lfads.flags import FlagError, parse_command_line, usage  # absl, checked above

    if any(a in HELP_FLAGS for a in args):
        print(usage())
        return 0
    try:
        flags, app = parse_command_line(args)
    except FlagError as err:
        print(f"lfads: error: {err}", file=sys.stderr)
        return 2
    if app.only_check_args:
        return 0
    if xla_flags := xla_flags_for(flags.kind, os.environ.get("XLA_FLAGS", "")):
        os.environ["XLA_FLAGS"] = xla_flags  # before TensorFlow loads: XLA reads them once
    try:
        if not flags.debug_verbose:
            _import_tensorflow_quietly()
        from lfads.run import run  # TensorFlow loads here, after the flags are known to be good

        run_as_asked(lambda: run(flags), app)
    except LfadsError as err:
        print(f"lfads: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lfads: error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # anything else: full traceback, then the one-line verdict
        traceback.print_exc()
        print(f"lfads: error: {_one_line_verdict(err)}", file=sys.stderr)
        post_mortem_if_asked(app)
        return 1
    return 0
