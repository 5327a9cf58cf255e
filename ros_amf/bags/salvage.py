"""Raw messages out of a damaged ROS 2 bag: the readable part of a truncated or corrupt sqlite3 or mcap file.

``rosbags`` reads a bag through its index (sqlite's b-trees, mcap's summary at the end of the file), so
a bag cut short or damaged midway either does not open or stops at the first bad record. Here the
files are read without trusting the index:

- sqlite3: pages past the end of a truncated file are ignored (``PRAGMA writable_schema`` makes SQLite
  accept a file shorter than its header says), message rows are read in id order and a row whose page
  is lost is stepped over one id at a time;
- mcap: records are walked from the start of the file; where a record is damaged (a length that runs
  past its container, an unknown opcode) the walk resynchronises on the next record that is plausible
  in every field (a chunk whose sizes add up, a message on a known channel inside its chunk's time range).

Messages come in file order (the recording order) as ``RawMessage``; ``damaged_regions`` counts the
places where records were stepped over, so the caller can say what was lost.
"""
from __future__ import annotations

import mmap
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK = 0x03, 0x04, 0x05, 0x06
_KNOWN_OPCODES = set(range(0x01, 0x10))
_RECORD_HEAD = 9                 # opcode u8 + content length u64
_MESSAGE_HEAD = 2 + 4 + 8 + 8    # channel u16, sequence u32, log time u64, publish time u64
_SQLITE_ROW_PROBE = 256          # ids probed one by one past the last readable row before giving up


class SalvageError(Exception):
    """Not even the bag's topic list can be read: nothing can be salvaged."""


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes | None           # None: the row exists but its bytes are on a lost page
    problem: str = ""            # why data is None


@dataclass
class DamagedBag:
    """What could be read of one bag: topics (name -> msgtype), expected counts, raw messages."""

    path: Path
    storage: str
    topics: dict[str, str]
    expected_counts: dict[str, int] = field(default_factory=dict)   # from metadata.yaml, when it is readable
    damaged_regions: int = 0     # places where records or rows were stepped over

    def messages(self, topic: str) -> Iterator[RawMessage]:
        files = _storage_files(self.path, self.storage)
        for file in files:
            reader = _sqlite_messages if self.storage == "sqlite3" else _mcap_messages
            yield from reader(self, file, topic)


def metadata_counts(path: Path) -> dict[str, int]:
    """Messages per topic promised by a bag directory's metadata.yaml ({} when absent or unreadable)."""
    meta = path / "metadata.yaml" if path.is_dir() else None
    if meta is None or not meta.is_file():
        return {}
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        return {t["topic_metadata"]["name"]: int(t["message_count"]) for t in info["topics_with_message_count"]}
    except Exception:  # a damaged metadata file only loses the "of N" part of the report
        return {}


def _storage_files(path: Path, storage: str) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(path.glob("*.db3" if storage == "sqlite3" else "*.mcap"))


def open_damaged(path: Path) -> DamagedBag:
    """The readable topics of a damaged sqlite3 or mcap bag; SalvageError when none can be read."""
    path = Path(path)
    if path.suffix == ".bag":
        raise SalvageError("ROS 1 bags cannot be salvaged here; use 'rosbag reindex' on it first")
    if path.is_file() and path.suffix == ".mcap" or any(path.glob("*.mcap")):
        storage = "mcap"
    elif any(path.glob("*.db3")):
        storage = "sqlite3"
    else:
        raise SalvageError("it holds no .db3 or .mcap file")
    bag = DamagedBag(path, storage, {}, metadata_counts(path))
    for file in _storage_files(path, storage):
        bag.topics.update(_sqlite_topics(file) if storage == "sqlite3" else _mcap_topics(file))
    if not bag.topics:
        raise SalvageError("no topic definition survived the damage")
    return bag


# -- sqlite3 ---------------------------------------------------------------------------------------
def _sqlite_connect(file: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    db.execute("PRAGMA writable_schema=ON")  # accept a file shorter than the page count in its header
    return db


def _sqlite_topics(file: Path) -> dict[str, str]:
    try:
        db = _sqlite_connect(file)
        try:
            return {name: msgtype for name, msgtype in db.execute("SELECT name, type FROM topics")}
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return {}


def _sqlite_rows(bag: DamagedBag, db: sqlite3.Connection, topic_id: int) -> list[tuple[int, int]]:
    """(timestamp, id) of every readable row of one topic: scan in id order, probe past each lost page."""
    rows: list[tuple[int, int]] = []
    last_id, misses, in_gap = 0, 0, False
    while misses < _SQLITE_ROW_PROBE:
        try:
            for row_id, topic, stamp in db.execute(
                    "SELECT id, topic_id, timestamp FROM messages WHERE id > ? ORDER BY id", (last_id,)):
                misses, in_gap, last_id = 0, False, row_id
                if topic == topic_id:
                    rows.append((stamp, row_id))
            return rows
        except sqlite3.DatabaseError:
            # the scan hit a lost page: step over single ids until one is readable again
            if not in_gap:
                bag.damaged_regions += 1
                in_gap = True
            last_id += 1
            misses += 1
            try:
                found = db.execute("SELECT topic_id, timestamp FROM messages WHERE id = ?", (last_id,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if found is not None:
                misses, in_gap = 0, False
                if found[0] == topic_id:
                    rows.append((found[1], last_id))
    return rows


def _sqlite_messages(bag: DamagedBag, file: Path, topic: str) -> Iterator[RawMessage]:
    try:
        db = _sqlite_connect(file)
    except sqlite3.DatabaseError:
        bag.damaged_regions += 1
        return
    try:
        found = db.execute("SELECT id, type FROM topics WHERE name = ?", (topic,)).fetchone()
        if found is None:
            return
        topic_id, msgtype = found
        for stamp, row_id in sorted(_sqlite_rows(bag, db, topic_id)):   # rosbags' order: by timestamp
            try:
                (data,) = db.execute("SELECT data FROM messages WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.DatabaseError as err:
                yield RawMessage(topic, msgtype, stamp, None, f"its stored bytes are unreadable ({err})")
                continue
            yield RawMessage(topic, msgtype, stamp, bytes(data))
    except sqlite3.DatabaseError:
        bag.damaged_regions += 1
    finally:
        db.close()


# -- mcap ------------------------------------------------------------------------------------------
def _string(buf, at: int, end: int) -> tuple[str, int]:
    if at + 4 > end:
        raise ValueError("string runs past its record")
    (size,) = struct.unpack_from("<I", buf, at)
    if at + 4 + size > end:
        raise ValueError("string runs past its record")
    return bytes(buf[at + 4:at + 4 + size]).decode("utf-8"), at + 4 + size


@dataclass
class _McapState:
    schemas: dict[int, str] = field(default_factory=dict)      # schema id -> message type
    channels: dict[int, tuple[str, str]] = field(default_factory=dict)  # channel id -> (topic, msgtype)


def _parse_definition(state: _McapState, op: int, buf, at: int, end: int) -> None:
    """Remember a schema or channel record (they repeat in the summary; the first readable one wins)."""
    try:
        if op == _OP_SCHEMA:
            (schema_id,) = struct.unpack_from("<H", buf, at)
            name, _ = _string(buf, at + 2, end)
            state.schemas.setdefault(schema_id, name)
        elif op == _OP_CHANNEL:
            channel_id, schema_id = struct.unpack_from("<HH", buf, at)
            topic, _ = _string(buf, at + 4, end)
            if schema_id in state.schemas:
                state.channels.setdefault(channel_id, (topic, state.schemas[schema_id]))
    except (ValueError, struct.error, UnicodeDecodeError):
        pass  # a damaged definition: its messages are reported as on an unknown channel


def _decompress(compression: str, data: bytes) -> bytes:
    """The chunk's records; of a chunk cut short, as much as the compressed stream still yields."""
    if compression == "":
        return data
    if compression == "zstd":
        from backports import zstd  # rosbags' own dependency for mcap chunks
        return zstd.ZstdDecompressor().decompress(data)
    if compression == "lz4":
        from lz4.frame import LZ4FrameDecompressor
        return LZ4FrameDecompressor().decompress(data)
    raise ValueError(f"unknown chunk compression '{compression}'")


def _chunk_at(buf, at: int, end: int, cut_short: bool = False) -> tuple[int, int, str, int, int] | None:
    """(start time, end time, compression, records offset, records length) if a plausible chunk starts at
    ``at``; ``cut_short`` also accepts a chunk that the end of the file cuts off (records length clipped)."""
    if at + _RECORD_HEAD + 36 > end or buf[at] != _OP_CHUNK:
        return None
    (length,) = struct.unpack_from("<Q", buf, at + 1)
    content, stop = at + _RECORD_HEAD, at + _RECORD_HEAD + length
    if stop > end and not cut_short:
        return None
    start_time, end_time, _, _ = struct.unpack_from("<QQQI", buf, content)
    try:
        compression, records_len_at = _string(buf, content + 28, min(stop, end))
    except (ValueError, UnicodeDecodeError):
        return None
    if records_len_at + 8 > min(stop, end) or start_time > end_time or compression not in ("", "zstd", "lz4"):
        return None
    (records_len,) = struct.unpack_from("<Q", buf, records_len_at)
    if records_len_at + 8 + records_len != stop:
        return None
    return start_time, end_time, compression, records_len_at + 8, min(records_len, end - records_len_at - 8)


def _message_at(state: _McapState, buf, at: int, end: int, times: tuple[int, int] | None) -> int | None:
    """The record length if a plausible message record starts at ``at`` (known channel, time in range)."""
    if at + _RECORD_HEAD + _MESSAGE_HEAD > end or buf[at] != _OP_MESSAGE:
        return None
    (length,) = struct.unpack_from("<Q", buf, at + 1)
    channel, _, log_time, _ = struct.unpack_from("<HIQQ", buf, at + _RECORD_HEAD)
    if length < _MESSAGE_HEAD or at + _RECORD_HEAD + length > end or channel not in state.channels:
        return None
    if times is not None and not times[0] <= log_time <= times[1]:
        return None
    return length


def _resync(state: _McapState, buf, at: int, end: int, times: tuple[int, int] | None) -> int:
    """The next offset after ``at`` where a plausible chunk or message record starts (``end`` if none)."""
    position = at + 1
    while position < end:
        chunk = buf.find(bytes([_OP_CHUNK]), position, end) if times is None else -1
        message = buf.find(bytes([_OP_MESSAGE]), position, end)
        candidates = [c for c in (chunk, message) if c >= 0]
        if not candidates:
            return end
        position = min(candidates)
        if (times is None and _chunk_at(buf, position, end)) or _message_at(state, buf, position, end, times):
            return position
        position += 1
    return end


def _walk(bag: DamagedBag, state: _McapState, buf, at: int, end: int, topic: str,
          times: tuple[int, int] | None) -> Iterator[RawMessage]:
    """Records of ``buf[at:end]`` (the file, or one chunk's records when ``times`` is its time range)."""
    while at + _RECORD_HEAD <= end:
        op = buf[at]
        (length,) = struct.unpack_from("<Q", buf, at + 1)
        content, stop = at + _RECORD_HEAD, at + _RECORD_HEAD + length
        if op not in _KNOWN_OPCODES or stop > end:
            if times is None and op in (0x02, 0x0F):
                return  # footer / data-end record cut short: nothing after it holds messages
            bag.damaged_regions += 1
            chunk = _chunk_at(buf, at, end, cut_short=True) if times is None else None
            if chunk is not None:  # the file ends inside this chunk: read what it still holds
                yield from _chunk_messages(bag, state, buf, chunk, topic)
                return
            at = _resync(state, buf, at, end, times)
            continue
        if op in (_OP_SCHEMA, _OP_CHANNEL):
            _parse_definition(state, op, buf, content, stop)
        elif op == _OP_MESSAGE and _message_at(state, buf, at, end, times) is not None:
            channel, _, log_time, _ = struct.unpack_from("<HIQQ", buf, content)
            if state.channels[channel][0] == topic:
                yield RawMessage(topic, state.channels[channel][1], log_time,
                                 bytes(buf[content + _MESSAGE_HEAD:stop]))
        elif op == _OP_MESSAGE:
            bag.damaged_regions += 1  # a message on a channel whose definition was lost
        elif op == _OP_CHUNK and times is None:
            chunk = _chunk_at(buf, at, end)
            if chunk is None:
                bag.damaged_regions += 1
                at = _resync(state, buf, at, end, times)
                continue
            yield from _chunk_messages(bag, state, buf, chunk, topic)
        at = stop


def _chunk_messages(bag: DamagedBag, state: _McapState, buf, chunk: tuple, topic: str) -> Iterator[RawMessage]:
    start_time, end_time, compression, records_at, records_len = chunk
    try:
        records = _decompress(compression, bytes(buf[records_at:records_at + records_len]))
    except Exception:  # noqa: BLE001 -- zstd and lz4 raise their own types for damaged frames
        bag.damaged_regions += 1
        return
    yield from _walk(bag, state, records, 0, len(records), topic, (start_time, end_time))


def _mcap_messages(bag: DamagedBag, file: Path, topic: str) -> Iterator[RawMessage]:
    state = _McapState()
    with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:len(MCAP_MAGIC)] != MCAP_MAGIC:
            bag.damaged_regions += 1
            return
        yield from _walk(bag, state, buf, len(MCAP_MAGIC), len(buf), topic, None)


def _mcap_topics(file: Path) -> dict[str, str]:
    """Topics of the readable channel records (a walk that yields no messages)."""
    probe = DamagedBag(file, "mcap", {})
    state = _McapState()
    try:
        with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:len(MCAP_MAGIC)] != MCAP_MAGIC:
                return {}
            for _ in _walk(probe, state, buf, len(MCAP_MAGIC), len(buf), "\0no topic", None):
                pass
    except (OSError, ValueError):
        return {}
    return {topic: msgtype for topic, msgtype in state.channels.values()}
