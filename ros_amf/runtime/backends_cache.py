"""The on-disk cache of exported and compiled graphs, so a node restart does not export again.

Root: ``$ROS_AMF_CACHE``, else ``~/.cache/ros_amf``. An entry is a folder holding its files and a
``meta.json`` with each file's sha256 and the key it was built for (weights digest, input shape,
exporter and backend versions). An entry is used only when its meta parses, its key equals the one
asked for and every file hashes to what the meta says; anything else (stale version, truncated
file, half-written folder) is deleted and rebuilt, never trusted. Entries are built in a temporary
folder and renamed into place, so a crash or a second process never leaves a half entry behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ros_amf.contract.checkpoint import sha256_of

META = "meta.json"


def cache_root() -> Path:
    return Path(os.environ.get("ROS_AMF_CACHE") or Path.home() / ".cache" / "ros_amf")


@dataclass
class CacheResult:
    folder: Path
    meta: dict
    rebuilt_because: str | None   # None: found valid; else why it was (re)built: "missing", "stale", "corrupt"


_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(folder, threading.Lock())


def inspect_entry(folder: Path, key: dict) -> tuple[dict | None, str]:
    """(meta, "valid") when the entry at ``folder`` is complete and built for ``key``; else (None, why not)."""
    meta_path = folder / META
    if not meta_path.is_file():
        return None, "missing"
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
        if meta["key"] != key:
            return None, "stale"
        for name, digest in files.items():
            if sha256_of(folder / name) != digest:
                return None, "corrupt"
    except (OSError, ValueError, KeyError, TypeError):
        return None, "corrupt"
    return meta, "valid"


def get_or_build(folder: Path, key: dict, build: Callable[[Path], dict]) -> CacheResult:
    """The valid entry at ``folder`` for ``key``, or a fresh one made by ``build(tmp_folder) -> extra meta``.

    ``build`` writes its files into the folder it is given; every regular file there is hashed into the meta.
    """
    folder = Path(folder)
    with _lock_for(folder):
        meta, state = inspect_entry(folder, key)
        if meta is not None:
            return CacheResult(folder, meta, None)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            extra = build(tmp) or {}
            files = {p.name: sha256_of(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {"key": key, "files": files, **extra}
            (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            _replace_folder(tmp, folder, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta, now = inspect_entry(folder, key)
        if meta is None:
            raise RuntimeError(f"cache entry '{folder}' is {now} right after it was written; check the disk "
                               "and the ROS_AMF_CACHE folder.")
        return CacheResult(folder, meta, state)


def _replace_folder(tmp: Path, folder: Path, key: dict) -> None:
    for _ in range(3):
        try:
            os.replace(tmp, folder)   # atomic when folder is absent or empty
            return
        except OSError:
            # another process may have just published the same entry: keep it if it is valid
            if inspect_entry(folder, key)[0] is not None:
                return
            shutil.rmtree(folder, ignore_errors=True)
    raise RuntimeError(f"cache entry '{folder}' could not be written; check that ROS_AMF_CACHE is writable.")
