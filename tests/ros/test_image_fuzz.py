"""Property tests over the image input path: any encoding, width, height, step and data length.

``image_to_array`` either returns exactly the declared pixels (right shape, right bytes) or raises BadImage
with a counter reason, never anything else. Through the node's own subscription callback, no message makes an
exception escape, and every frame that came in is accounted for: published, dropped, rejected (by reason)
or failed."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from ros_amf.contract.pixels import ENCODINGS
from ros_amf.contract.image_messages import BadImage, image_to_array
from ros_amf.ros.node import PerceptionNode
from runtime_helpers import tiny_instance, tiny_semantic

pytestmark = pytest.mark.ros

REASONS = {"unsupported_encoding", "zero_size", "too_large", "bad_step", "truncated"}
NODE_REASONS = REASONS | {"odd_size"}
# the converted encodings the node also takes (issue 20): bytes per pixel, extra chroma rows per 2 rows, even w, even h
PACKED = {**{f"bayer_{p}8": (1, 0, True, True) for p in ("rggb", "bggr", "gbrg", "grbg")},
          **{e: (2, 0, True, False) for e in ("uyvy", "yuv422", "yuyv", "yuv422_yuy2")},
          "nv12": (1, 1, True, True), "nv21": (1, 1, True, True), "mono16": (2, 0, False, False)}
_names = itertools.count()

encodings = st.one_of(st.sampled_from(sorted(ENCODINGS)), st.sampled_from(["RGB8", "Bgr8", "MONO8"]),
                      st.sampled_from(["mono16", "16UC1", "bayer_rggb8", "yuv422", "32FC1", "", "rgb16"]),
                      st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10))
# mostly small sizes whose pixels can be checked, plus the extremes of the message's uint32 fields
sizes = st.one_of(st.integers(0, 40), st.sampled_from([2**16, 2**31, 2**32 - 1]))


@st.composite
def image_messages(draw) -> Image:
    encoding = draw(encodings)
    height, width = draw(sizes), draw(sizes)
    channels = ENCODINGS.get(encoding.lower(), (3,))[0]
    row = width * channels
    step = draw(st.one_of(st.just(row), st.integers(row, row + 16), st.integers(0, 200),
                          st.sampled_from([2**32 - 1])))
    step = min(step, 2**32 - 1)
    needed = step * max(height - 1, 0) + row
    # around the exact size a valid image needs, or anything small
    length = draw(st.one_of(st.integers(max(needed - 4, 0), needed + 4), st.integers(0, 600)))
    length = min(length, 200_000)
    data = draw(st.binary(min_size=min(length, 64), max_size=min(length, 64)))
    payload = (data * (length // max(len(data), 1) + 1))[:length] if data else bytes(length)
    return Image(height=height, width=width, step=step, encoding=encoding, data=payload)


def expected_reason(msg: Image, max_pixels: int) -> str | None:
    """The specification, written out independently of the implementation."""
    encoding = msg.encoding.lower()
    if encoding not in ENCODINGS:
        return "unsupported_encoding"
    if msg.height == 0 or msg.width == 0:
        return "zero_size"
    if msg.height * msg.width > max_pixels:
        return "too_large"
    row = msg.width * ENCODINGS[encoding][0]
    if msg.step < row:
        return "bad_step"
    if len(msg.data) < msg.step * (msg.height - 1) + row:
        return "truncated"
    return None


def expected_node_reason(msg: Image, max_pixels: int) -> str | None:
    """What the node does with a message: the plain encodings as above, the converted ones by their layout."""
    encoding = msg.encoding.lower()
    if encoding not in PACKED:
        return expected_reason(msg, max_pixels)
    bytes_per_pixel, chroma, even_w, even_h = PACKED[encoding]
    if msg.height == 0 or msg.width == 0:
        return "zero_size"
    if msg.height * msg.width > max_pixels:
        return "too_large"
    if (even_w and msg.width % 2) or (even_h and msg.height % 2):
        return "odd_size"
    row = msg.width * bytes_per_pixel
    if msg.step < row:
        return "bad_step"
    rows = msg.height + chroma * msg.height // 2
    if len(msg.data) < msg.step * (rows - 1) + row:
        return "truncated"
    return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msg=image_messages(), max_pixels=st.one_of(st.just(4096 * 4096), st.integers(1, 2000)))
def test_image_to_array_returns_the_declared_pixels_or_a_counted_reason(msg, max_pixels):
    expected = expected_reason(msg, max_pixels)
    try:
        array, encoding = image_to_array(msg, max_pixels)
    except BadImage as exc:
        assert exc.reason in REASONS and exc.reason == expected
        assert str(exc) and "\n" not in str(exc)
        return
    assert expected is None, f"accepted an image that should be rejected as {expected}"
    channels = ENCODINGS[encoding][0]
    assert encoding == msg.encoding.lower() and array.dtype == np.uint8
    assert array.shape == ((msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels))
    flat = np.frombuffer(bytes(msg.data), np.uint8)
    rows = np.stack([flat[r * msg.step:r * msg.step + msg.width * channels] for r in range(msg.height)])
    np.testing.assert_array_equal(array.reshape(msg.height, -1), rows)


def test_an_encoding_with_a_newline_stays_one_line():
    """The encoding is quoted (repr) in the reason: a control character cannot split the node's one-line warning."""
    with pytest.raises(BadImage) as caught:
        image_to_array(Image(height=1, width=1, step=3, encoding="rgb8\nFAKE LOG LINE", data=bytes(3)))
    assert "\n" not in str(caught.value) and "'rgb8\\nFAKE LOG LINE'" in str(caught.value)


@pytest.fixture(scope="module")
def node(ros_context):
    """The real perception node (tiny models), every frame converted: no lazy idling, no rate cap."""
    overrides = {"instance.input_size.short_side": 64, "instance.input_size.max_long_side": 96,
                 "semantic.input_size.short_side": 64, "semantic.input_size.max_long_side": 96,
                 "lazy": False, "max_rate_hz": 0.0, "max_image_pixels": 100_000}
    n = PerceptionNode(f"fuzz_{next(_names)}", context=ros_context,
                       models={"instance": tiny_instance(), "semantic": tiny_semantic()},
                       parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    yield n
    n.destroy_node()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(messages=st.lists(image_messages(), min_size=1, max_size=4))
@example(messages=[Image(height=20, width=30, step=90, encoding="rgb8", data=bytes(1800)),   # valid: processed
                   Image(height=20, width=30, step=96, encoding="bgr8", data=bytes(20 * 96 - 6)),
                   Image(height=20, width=30, step=90, encoding="rgb8", data=bytes(1799))])     # one byte short
def test_node_callback_never_raises_and_accounts_for_every_frame(node, messages):
    before = node.stats.snapshot()
    callback = node._on_image   # what the subscription calls for each message
    rejected = []
    for msg in messages:
        callback(msg)   # an exception here fails the test: it would escape into the executor
        reason = expected_node_reason(msg, 100_000)
        if reason is not None:
            rejected.append(reason)
    assert node.engine.wait_idle(60.0)
    after = node.stats.snapshot()
    gained = {k: after.rejected.get(k, 0) - before.rejected.get(k, 0) for k in NODE_REASONS}
    assert {k: v for k, v in gained.items() if v} == {r: rejected.count(r) for r in set(rejected)}
    came_in = after.frames_in - before.frames_in
    settled = sum(getattr(after, k) - getattr(before, k)
                  for k in ("frames_out", "frames_dropped", "frames_rejected", "frames_failed"))
    assert came_in == len(messages) and settled == came_in
