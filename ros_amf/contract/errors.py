"""The one exception a user's data files can cause (dataset trees, a bag's ground-truth sidecar),
with a message naming the file and the problem."""
from __future__ import annotations

from pathlib import Path


class DatasetFileError(ValueError):
    """A dataset file is missing or malformed; the message says which file and what to do."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
