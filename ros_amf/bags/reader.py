"""Read camera images from recorded bags with ``rosbags`` (no ROS install, no rclpy).

Opens ROS 2 bags (sqlite3 or mcap storage, a bag directory or a bare ``.mcap`` file) and
ROS 1 ``.bag`` files. Image topics may carry ``sensor_msgs/Image`` in any encoding the nodes
accept or ``sensor_msgs/CompressedImage`` (JPEG/PNG). The plain encodings (rgb8, bgr8, rgba8, bgra8,
mono8) are kept as stored; the others (bayer, yuv422, nv12/nv21, mono16) and compressed frames are
decoded here exactly as the node decodes them (``contract.image_messages``: a damaged JPEG is refused,
never half-decoded), so a replay publishes plain frames and their decoding is not part of its timing.
Every problem a user can cause is a specific ``BagError`` subclass whose message names the file and
says what to do; a truncated or corrupt bag reports how many
messages were read before the damage.

With ``skip_damaged=True`` the reader degrades instead of stopping: a message that does not
deserialise or holds an invalid image is skipped and counted, and a bag that will not open or breaks
midway is read without its index (``ros_amf.bags.salvage``). ``reader.damage`` then says how many
frames were played, how many were skipped and why, and how many the damage swallowed whole.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.typesys import Stores, get_typestore

from ros_amf.bags.damage import DamageReport
from ros_amf.bags.salvage import DamagedBag, RawMessage, SalvageError, metadata_counts, open_damaged
from ros_amf.contract.image_messages import ACCEPTED, BadImage, compressed_to_pixels, image_to_pixels
from ros_amf.contract.pixels import ENCODINGS, to_rgb

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
DEFAULT_IMAGE_TOPIC = "/camera/image_raw"
# sensor_msgs/Image and CompressedImage have not changed across ROS 2 releases: the newest stock
# definitions decode a salvaged message whose bag's own definitions were not readable
_STOCK_TYPES = get_typestore(Stores.LATEST)
# above any camera (a 16K frame is 2^27.2 pixels), still a guard against a damaged header asking for gigabytes
_MAX_PIXELS = 1 << 30


class BagError(Exception):
    """Base class of every error raised while reading a bag."""


class BagNotFoundError(BagError, FileNotFoundError):
    """The bag path does not exist."""


class TopicNotFoundError(BagError):
    """The requested topic is not in the bag."""


class UnsupportedMessageTypeError(BagError):
    """The topic exists but does not carry sensor_msgs/Image or sensor_msgs/CompressedImage."""


class UnsupportedEncodingError(BagError):
    """An image uses an encoding the nodes cannot consume (e.g. 32FC1 depth, rgb16)."""


class CorruptBagError(BagError):
    """The bag is truncated or corrupt; ``messages_read`` messages were read before the damage."""

    def __init__(self, message: str, *, messages_read: int, messages_expected: int | None = None):
        super().__init__(message)
        self.messages_read = messages_read
        self.messages_expected = messages_expected


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    message_count: int

    @property
    def is_image(self) -> bool:
        return self.msgtype in IMAGE_TYPES


@dataclass(frozen=True)
class BagImage:
    """One camera frame as stored (Image) or decoded (CompressedImage), ready to publish as sensor_msgs/Image."""

    index: int           # position on its topic, 0-based
    log_time_ns: int     # when the recorder received it (bag timestamp)
    stamp_ns: int        # header.stamp, the key outputs are matched by
    frame_id: str
    encoding: str        # one of contract.pixels.ENCODINGS, the encodings the nodes accept
    height: int
    width: int
    step: int            # bytes per row (may include padding)
    data: np.ndarray     # uint8, flat, len = step * height

    def to_array(self) -> np.ndarray:
        """HxWxC (HxW for mono8) view of the pixels without row padding; no copy when rows are unpadded."""
        channels = ENCODINGS[self.encoding][0]
        rows = self.data.reshape(self.height, self.step)[:, : self.width * channels]
        return rows.reshape(self.height, self.width) if channels == 1 else rows.reshape(self.height, self.width, channels)

    def to_rgb(self) -> np.ndarray:
        """HxWx3 RGB uint8, the layout the models consume."""
        return np.ascontiguousarray(to_rgb(self.to_array(), self.encoding))


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _expected_message_count(path: Path) -> int | None:
    """Message count promised by metadata.yaml, to say how much of a damaged bag was lost."""
    meta = path / "metadata.yaml" if path.is_dir() else None
    if meta is None or not meta.is_file():
        return None
    try:
        info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        return int(info["message_count"])
    except Exception:  # unreadable metadata only loses the "of N" part of the message
        return None


class BagReader:
    """Context manager over one bag: ``with BagReader(path) as bag: for frame in bag.images(): ...``.

    ``skip_damaged``: skip and count damaged messages (see ``damage``) instead of raising CorruptBagError.
    """

    def __init__(self, path: str | Path, *, skip_damaged: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise BagNotFoundError(f"bag '{self.path}' does not exist; pass a rosbag2 directory, an .mcap file "
                                   f"or a ROS 1 .bag file.")
        self.skip_damaged = skip_damaged
        self._reader: AnyReader | None = None
        self._salvage: DamagedBag | None = None   # the bag read without its index (skip_damaged only)
        self.damage: DamageReport | None = None   # the account of the last images() call

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> BagReader:
        # Bags without embedded message definitions (older sqlite3 bags) use the newest stock types.
        reader = AnyReader([self.path], default_typestore=get_typestore(Stores.LATEST))
        try:
            reader.open()
        except (AnyReaderError, sqlite3.DatabaseError) as err:
            if self.skip_damaged:
                self._salvage = self._open_damaged(err)
                return self
            expected = _expected_message_count(self.path)
            of = f" of {expected}" if expected is not None else ""
            raise CorruptBagError(f"bag '{self.path}' is truncated or corrupt and cannot be opened ({err}); "
                                  f"read 0{of} messages. Re-record or repair it (e.g. 'ros2 bag reindex').",
                                  messages_read=0, messages_expected=expected) from err
        self._reader = reader
        return self

    def _open_damaged(self, err: Exception) -> DamagedBag:
        try:
            return open_damaged(self.path)
        except SalvageError as why:
            raise CorruptBagError(f"bag '{self.path}' is truncated or corrupt and cannot be opened ({err}), and "
                                  f"nothing of it can be salvaged: {why}. Re-record or repair it (e.g. 'ros2 bag "
                                  f"reindex').", messages_read=0, messages_expected=_expected_message_count(self.path)
                                  ) from err

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._salvage = None

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def _open_reader(self) -> AnyReader:
        if self._reader is None:
            raise BagError(f"bag '{self.path}' is not open; use 'with BagReader(path) as bag:'.")
        return self._reader

    # -- topics ------------------------------------------------------------------------------
    def topics(self) -> list[TopicInfo]:
        if self._salvage is not None:  # counts: what metadata.yaml promised (0 when unknown)
            return [TopicInfo(name, msgtype, self._salvage.expected_counts.get(name, 0))
                    for name, msgtype in sorted(self._salvage.topics.items())]
        return [TopicInfo(name, info.msgtype or "", info.msgcount)
                for name, info in sorted(self._open_reader.topics.items())]

    def image_topics(self) -> list[TopicInfo]:
        return [t for t in self.topics() if t.is_image]

    def resolve_image_topic(self, topic: str | None = None) -> TopicInfo:
        """The named topic, checked to carry images; without a name, /camera/image_raw or the only image topic."""
        topics = {t.name: t for t in self.topics()}
        listing = ", ".join(f"{t.name} ({t.msgtype})" for t in topics.values()) or "none"
        if topic is None:
            images = self.image_topics()
            if DEFAULT_IMAGE_TOPIC in topics and topics[DEFAULT_IMAGE_TOPIC].is_image:
                return topics[DEFAULT_IMAGE_TOPIC]
            if len(images) == 1:
                return images[0]
            raise TopicNotFoundError(f"bag '{self.path}' has {len(images)} image topics; choose one with --topic "
                                     f"(topics: {listing}).")
        if topic not in topics:
            raise TopicNotFoundError(f"topic '{topic}' is not in bag '{self.path}'; its topics are: {listing}.")
        if not topics[topic].is_image:
            raise UnsupportedMessageTypeError(
                f"topic '{topic}' in bag '{self.path}' carries {topics[topic].msgtype}, but replay needs "
                f"sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage; pick an image topic with --topic.")
        return topics[topic]

    @property
    def start_time_ns(self) -> int:
        return self._open_reader.start_time

    @property
    def end_time_ns(self) -> int:
        return self._open_reader.end_time

    # -- messages ----------------------------------------------------------------------------
    def images(self, topic: str | None = None, *, limit: int | None = None) -> Iterator[BagImage]:
        """Frames of one image topic in recording order; raises CorruptBagError where the bag is damaged,
        or (``skip_damaged``) skips and counts the damaged messages in ``self.damage``."""
        info = self.resolve_image_topic(topic)
        if self.skip_damaged:
            yield from self._readable_images(info, limit)
            return
        reader = self._open_reader
        connections = [c for c in reader.connections if c.topic == info.name]
        read = 0
        stream = reader.messages(connections=connections)
        while limit is None or read < limit:
            try:
                item = next(stream)
            except StopIteration:
                return
            except Exception as err:  # rosbags, sqlite3 and mcap each raise their own types for damaged data
                raise self._corrupt(info, read, err) from err
            connection, log_time_ns, raw = item
            try:
                message = reader.deserialize(raw, connection.msgtype)
            except Exception as err:  # rosbags raises several types for malformed CDR
                raise self._corrupt(info, read, err) from err
            yield self._to_bag_image(message, connection.msgtype, read, log_time_ns, info)
            read += 1

    def _readable_images(self, info: TopicInfo, limit: int | None) -> Iterator[BagImage]:
        """Every frame that can be read; each damaged message is counted in ``self.damage`` by reason."""
        promised = metadata_counts(self.path).get(info.name)
        expected = promised if promised is not None else (info.message_count if self._salvage is None else None)
        damage = self.damage = DamageReport(info.name, expected, salvaged=self._salvage is not None)
        position = 0  # messages met on the topic, skipped ones included: BagImage.index
        for raw in self._raw_messages(info, damage):
            if limit is not None and damage.read >= limit:
                damage.stopped_early = True
                break
            index, position = position, position + 1
            if raw.data is None:
                damage.skip(index, "unreadable", raw.problem)
                continue
            try:
                message = self._deserialize(raw)
            except Exception as err:  # noqa: BLE001 -- rosbags raises several types for malformed CDR
                damage.skip(index, "undecodable", f"{type(err).__name__}: {str(err)[:120]}")
                continue
            try:
                frame = self._to_bag_image(message, raw.msgtype, index, raw.log_time_ns, info)
            except CorruptBagError as err:
                damage.skip(index, "bad_image", str(err).split(";")[0])
                continue
            damage.read += 1
            yield frame
        if self._salvage is not None:
            damage.damaged_regions += self._salvage.damaged_regions

    def _raw_messages(self, info: TopicInfo, damage: DamageReport) -> Iterator[RawMessage]:
        """The topic's stored messages through the bag's index; where that breaks, the rest read without it."""
        if self._salvage is None:
            reader = self._open_reader
            connections = [c for c in reader.connections if c.topic == info.name]
            stream = reader.messages(connections=connections)
            last_time, at_last_time = -1, 0   # to leave out what the index already delivered
            while True:
                try:
                    connection, log_time_ns, raw = next(stream)
                except StopIteration:
                    return
                except Exception:  # noqa: BLE001 -- rosbags, sqlite3 and mcap raise their own types
                    damage.salvaged = True
                    break
                at_last_time = at_last_time + 1 if log_time_ns == last_time else 1
                last_time = log_time_ns
                yield RawMessage(info.name, connection.msgtype, log_time_ns, bytes(raw))
            try:   # the rest of the file, read without its index
                self._salvage = open_damaged(self.path)
            except SalvageError:   # keep what was read; the rest counts as lost
                damage.damaged_regions += 1
                return
            for raw_message in self._salvage.messages(info.name):
                if raw_message.log_time_ns < last_time:
                    continue
                if raw_message.log_time_ns == last_time and at_last_time > 0:
                    at_last_time -= 1
                    continue
                yield raw_message
            return
        yield from self._salvage.messages(info.name)

    def _deserialize(self, raw: RawMessage):
        """With the bag's own types when it opened (ROS 1 or 2), else the stock ROS 2 ones (CDR)."""
        if self._reader is None:
            return _STOCK_TYPES.deserialize_cdr(raw.data, raw.msgtype)
        if not self._reader.is2:
            return self._reader.deserialize(raw.data, raw.msgtype)
        return self._reader.typestore.deserialize_cdr(raw.data, raw.msgtype)

    def _corrupt(self, info: TopicInfo, read: int, err: Exception) -> CorruptBagError:
        return CorruptBagError(
            f"bag '{self.path}' is truncated or corrupt at message {read} of topic '{info.name}' ({err}); "
            f"read {read} of {info.message_count} messages before it. Re-record the bag or replay only the "
            f"first {read} frames with --limit {read}.",
            messages_read=read, messages_expected=info.message_count)

    def _to_bag_image(self, message, msgtype: str, index: int, log_time_ns: int, info: TopicInfo) -> BagImage:
        header = message.header
        compressed = msgtype == COMPRESSED_IMAGE_TYPE
        encoding = None if compressed else message.encoding.lower()
        if encoding not in ENCODINGS:   # compressed, bayer, yuv, nv12/21, mono16: decoded as the node would
            encoding, pixels = self._decoded(compressed_to_pixels if compressed else image_to_pixels, message,
                                             index, info)
            return BagImage(index, log_time_ns, stamp_to_ns(header.stamp), header.frame_id, encoding,
                            pixels.shape[0], pixels.shape[1], pixels.strides[0], pixels.reshape(-1))
        data = np.asarray(message.data, dtype=np.uint8).reshape(-1)
        if data.size < message.step * message.height or message.step < message.width * ENCODINGS[encoding][0]:
            raise CorruptBagError(
                f"frame {index} of topic '{info.name}' in bag '{self.path}' holds {data.size} bytes but "
                f"{message.height} rows of step {message.step} ({message.width} px {encoding}) are declared; "
                f"read {index} of {info.message_count} messages before it.",
                messages_read=index, messages_expected=info.message_count)
        return BagImage(index, log_time_ns, stamp_to_ns(header.stamp), header.frame_id, encoding,
                        int(message.height), int(message.width), int(message.step), data[: message.step * message.height])

    def _decoded(self, decode, message, index: int, info: TopicInfo) -> tuple[str, np.ndarray]:
        """(encoding, contiguous pixels) by the node's own decoding (``contract.image_messages``), so a replay sees what a live camera would;
        its refusals become this reader's errors: an encoding the nodes cannot take stops the topic, a damaged
        frame is corrupt (skipped and counted with ``skip_damaged``)."""
        try:
            pixels, encoding = decode(message, _MAX_PIXELS)
        except BadImage as err:
            where = f"frame {index} of topic '{info.name}' in bag '{self.path}'"
            diagnosis = str(err).rsplit("; ", 1)[0]   # what is wrong; the advice after it is for a live camera
            if err.reason == "unsupported_encoding":
                raise UnsupportedEncodingError(
                    f"{where}: {diagnosis}; the nodes accept {', '.join(ACCEPTED)} and JPEG/PNG CompressedImage: "
                    "replay another topic with --topic, or convert this one.") from err
            raise CorruptBagError(f"{where} is invalid ({diagnosis}); read {index} of {info.message_count} "
                                  "messages before it.",
                                  messages_read=index, messages_expected=info.message_count) from err
        return encoding, np.ascontiguousarray(pixels)   # a BagImage holds its rows packed


def list_topics(path: str | Path) -> list[TopicInfo]:
    with BagReader(path) as bag:
        return bag.topics()


def read_images(path: str | Path, topic: str | None = None, *, limit: int | None = None) -> list[BagImage]:
    """All frames of an image topic (convenience for small bags and tests)."""
    with BagReader(path) as bag:
        return list(bag.images(topic, limit=limit))
