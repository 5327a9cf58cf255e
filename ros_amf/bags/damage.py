"""The account of a damaged topic read with ``BagReader(path, skip_damaged=True)``: what was played,
what was skipped and why, and how many messages the damage swallowed whole."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# why a message was skipped -> how the report says it
REASONS = {
    "undecodable": "undecodable (stored bytes do not deserialise)",
    "bad_image": "invalid image (declared size or compressed data wrong)",
    "unreadable": "unreadable (stored bytes on a lost part of the file)",
}
_EXAMPLES = 5  # first skips kept with their detail, enough to find them in the bag


@dataclass
class DamageReport:
    topic: str
    expected: int | None          # messages the bag's index or metadata promises (None: unknown)
    read: int = 0                 # frames delivered
    skipped: Counter = field(default_factory=Counter)   # reason -> messages found but not playable
    examples: list[str] = field(default_factory=list)    # "message 7: ..." for the first few skips
    salvaged: bool = False        # the file was read without its index (it would not open, or broke midway)
    damaged_regions: int = 0      # places in the file where records were stepped over
    stopped_early: bool = False   # a --limit ended reading: nothing after it is counted

    def skip(self, index: int, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason '{reason}'")
        self.skipped[reason] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"message {index}: {detail}")

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def lost(self) -> int | None:
        """Messages promised but never found in the readable part (None when the promise is unknown)."""
        if self.expected is None or self.stopped_early:
            return None
        return max(0, self.expected - self.read - self.skipped_total)

    @property
    def clean(self) -> bool:
        return not self.skipped_total and not self.lost and not self.damaged_regions and not self.salvaged

    def summary(self, path: object = "") -> str:
        """One sentence: played, skipped by reason, lost."""
        where = f" of bag '{path}'" if path else ""
        of = f" of {self.expected}" if self.expected is not None else ""
        if self.clean:
            return f"topic '{self.topic}'{where}: read {self.read}{of} messages, none damaged."
        parts = [f"{count} {REASONS[reason]}" for reason, count in sorted(self.skipped.items())]
        if self.lost:
            parts.append(f"{self.lost} missing from the readable part of the file")
        elif self.lost is None and self.damaged_regions and not self.stopped_early:
            parts.append("an unknown number lost in the damaged part (the bag records no message count)")
        how = " (read without the bag's index)" if self.salvaged else ""
        return (f"topic '{self.topic}'{where} is damaged{how}: playing {self.read}{of} messages, skipped "
                f"{', '.join(parts) or 'none'}; pass --stop-on-error to stop at the first damage instead.")

    def as_dict(self) -> dict:
        return {"topic": self.topic, "expected": self.expected, "read": self.read,
                "skipped": dict(self.skipped), "skipped_total": self.skipped_total, "lost": self.lost,
                "damaged_regions": self.damaged_regions, "salvaged": self.salvaged, "examples": list(self.examples)}
