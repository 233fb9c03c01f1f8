"""What prepare wrote last, so that a generated file someone edited since is kept, not overwritten.

prepare writes run scripts, runqueue.json and the collection's files again on every call. A file
whose bytes are neither what prepare last wrote there nor what it writes now was edited by hand: it
is renamed to `<name>.orig` (the first free such name), with a note, before the generated one takes
its place. The record is `.lfads-manager-written.json` in the collection folder (path -> sha256).
A file it has no entry for (a tree prepared before the record existed) is judged as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from manager.atomicio import write_if_changed
from manager.errors import ManagerError

RECORD_FILE = ".lfads-manager-written.json"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class WrittenFiles:
    """The sha256 of every file prepare wrote under one collection folder, by relative path. As a
    context manager, saved on leaving, also after a failure: what was written is recorded, so it is
    not taken for edited next time."""

    def __init__(self, collection_path: Path) -> None:
        self.root = collection_path
        self.path = collection_path / RECORD_FILE
        self.hashes: dict[str, str] = {}
        try:
            stored = json.loads(self.path.read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):
            stored = None  # none yet, or unreadable: nothing is judged edited
        if isinstance(stored, dict):
            self.hashes = {key: value for key, value in stored.items() if isinstance(key, str) and isinstance(value, str)}

    def __enter__(self) -> WrittenFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.save()

    def _key(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def write(self, path: Path, text: str, mode: int = 0o644, *, durable: bool = True, on_note: Callable[[str], None],
              foreign: Callable[[Path], str | None] | None = None) -> bool:
        """write_if_changed, recorded. A file about to be replaced that was edited since prepare wrote it
        (or that `foreign` finds was never prepare's) is set aside first, said through `on_note`."""
        data = text.encode()

        def keep_what_is_not_ours() -> None:
            note = self._keep_if_edited(path, data) or (foreign(path) if foreign is not None else None)
            if note is not None:
                on_note(note)

        changed = write_if_changed(path, data, mode, durable=durable, before_write=keep_what_is_not_ours)
        self.hashes[self._key(path)] = _digest(data)
        return changed

    def _keep_if_edited(self, path: Path, new: bytes) -> str | None:
        """An edited file goes aside (`.orig`); -> the note saying so."""
        if path.is_symlink():  # prepare writes files, never links: this one is the user's wiring
            target = os.readlink(path)
            aside = set_aside(path)
            return (f"note: {path} was a symlink (to {target}); it is kept as {aside.name} and replaced by the"
                    " generated file")
        recorded = self.hashes.get(self._key(path))
        if recorded is None:
            return None
        try:
            current = path.read_bytes()
        except OSError:
            return None  # absent or unreadable: writing it says what is wrong
        if current == new or _digest(current) == recorded:
            return None
        aside = set_aside(path)
        return f"note: {path} was edited since lfads-manager prepare wrote it; it is kept as {aside.name} and replaced by the generated one"

    def save(self) -> None:
        """Keep the entries of files still there (runs that left the collection drop out)."""
        kept = {key: value for key, value in sorted(self.hashes.items()) if os.path.lexists(self.root / key)}
        if not kept and not os.path.lexists(self.path):
            return  # nothing written (a prepare refused before its first file): leave no trace
        write_if_changed(self.path, json.dumps({"sha256": kept}, indent=0) + "\n", durable=False)


def set_aside(path: Path) -> Path:
    """Rename `path` to `<name>.orig` (or `.orig.N`, the first free name); -> where it went."""
    for number in range(1000):
        aside = path.with_name(f"{path.name}.orig" + (f".{number}" if number else ""))
        if not os.path.lexists(aside):
            os.rename(path, aside)
            return aside
    raise ManagerError(path, "must be set aside, but 1000 earlier copies (*.orig) are in the way", "move the *.orig files away")
