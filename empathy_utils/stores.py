"""Dictionaries that outlive the process: what a model computed once is read back, not recomputed.

A judge's numbers for a reply depend only on the model and the reply (and its prompt), never on the
judge's verdict settings, so a re-run after changing a judge setting (``judge.confidence``, the
bootstrap, another comparison of students already judged) needs none of them again. These stores keep such numbers in SQLite
under ``$EMPATHY_CACHE_DIR``, committed as they are computed, with an in-memory layer in front. A value
is read back exactly as it was written; a value computed in another batch of rows may differ from a
fresh computation in the last bits of float rounding, as the response cache's replies may.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
from pathlib import Path
from typing import Any, Hashable, Iterable

from .paths import cache_dir


class SqliteMemo:
    """A dict-like store (``in``, ``[]``, ``update``) over one SQLite table of key -> bytes. Subclasses
    say how an entry's key becomes a text key (:meth:`key`) and how a value becomes bytes and back."""

    table = "entries"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path))
        self._db.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._db.commit()
        self._memory: dict[Hashable, Any] = {}

    def key(self, entry: Hashable) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def encode(self, value: Any) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, blob: bytes) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def __contains__(self, entry: Hashable) -> bool:
        if entry in self._memory:
            return True
        row = self._db.execute(f"SELECT value FROM {self.table} WHERE key = ?", (self.key(entry),)).fetchone()
        if row is None:
            return False
        self._memory[entry] = self.decode(row[0])
        return True

    def __getitem__(self, entry: Hashable) -> Any:
        if entry not in self:
            raise KeyError(entry)
        return self._memory[entry]

    def update(self, items: Iterable[tuple[Hashable, Any]]) -> None:
        items = list(items)
        self._memory.update(items)
        self._db.executemany(f"INSERT OR REPLACE INTO {self.table} (key, value) VALUES (?, ?)",
                             [(self.key(k), self.encode(v)) for k, v in items])
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0]


class ScoreStore(SqliteMemo):
    """The likelihood judge's mean log-probabilities, entry (prompt ids, answer ids), for one scoring
    model: ``identity`` names the model, its dtype and device, so another model's numbers are never
    read. Values are stored as IEEE doubles: read back bit for bit."""

    table = "mean_logprobs"

    def __init__(self, identity: str, path: str | os.PathLike | None = None):
        self.identity = identity
        super().__init__(path or cache_dir() / "scores.sqlite")

    def key(self, entry) -> str:
        prompt, answer = entry
        payload = json.dumps([self.identity, list(prompt), list(answer)])
        return hashlib.sha256(payload.encode()).hexdigest()

    def encode(self, value: float) -> bytes:
        return struct.pack("<d", float(value))

    def decode(self, blob: bytes) -> float:
        return struct.unpack("<d", blob)[0]
