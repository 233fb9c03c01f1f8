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
from pathlib import Path

from manager.atomicio import write_if_changed
from manager.errors import ManagerError

RECORD_FILE = ".lfads-manager-written.json"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class WrittenFiles:
    """The sha256 of every file prepare wrote under one collection folder, by relative path."""

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

    def _key(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def edited_since(self, path: Path, new: bytes) -> bool:
        """Whether `path` holds bytes that are neither `new` nor what prepare last wrote there."""
        recorded = self.hashes.get(self._key(path))
        if recorded is None or path.is_symlink():
            return False
        try:
            current = path.read_bytes()
        except OSError:
            return False  # absent or unreadable: writing it says what is wrong
        return current != new and _digest(current) != recorded

    def wrote(self, path: Path, data: bytes) -> None:
        self.hashes[self._key(path)] = _digest(data)

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


def keep_if_edited(record: WrittenFiles, path: Path, new: str | bytes) -> str | None:
    """Before prepare writes `new` to `path`: an edited file goes aside; -> the note saying so."""
    data = new.encode() if isinstance(new, str) else new
    if not record.edited_since(path, data):
        return None
    aside = set_aside(path)
    return f"note: {path} was edited since lfads-manager prepare wrote it; it is kept as {aside.name} and replaced by the generated one"
