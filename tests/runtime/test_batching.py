"""One model copy for several cameras (runtime.batching): batched forwards equal per-frame results,
per-camera counters, drops counted per camera, mixed frame sizes, output_scale network."""
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from ros_amf.runtime.batching import BatchedEngine, split_batch
from ros_amf.runtime.loading import LoadedModel
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.preprocess import InputSize
from runtime_helpers import tiny_instance, tiny_semantic

SIZE = InputSize(64, 96)
SIZES = {"instance": SIZE, "semantic": SIZE}
CAMERAS = ["front", "rear", "left"]


def _image(h=64, w=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_same(want, have):
    assert want.error is None and have.error is None
    assert (want.semantic.labels == have.semantic.labels).mean() >= 0.999
    assert want.instances.classes.tolist() == have.instances.classes.tolist()
    np.testing.assert_allclose(want.instances.scores, have.instances.scores, atol=1e-4)
    assert (want.instances.ids == have.instances.ids).mean() >= 0.999


class CountingForward(nn.Module):
    """Wraps a model: records the batch size of every forward (and can be slow)."""

    def __init__(self, module: nn.Module, delay_s: float = 0.0):
        super().__init__()
        self.inner, self.delay_s, self.batch_sizes = module, delay_s, []
        self.cfg = getattr(module, "cfg", None)

    def forward(self, images):
        self.batch_sizes.append(int(images.shape[0]))
        time.sleep(self.delay_s)
        return self.inner(images)


def _counting(model: LoadedModel, delay_s: float = 0.0) -> LoadedModel:
    return LoadedModel(model.task, model.name, CountingForward(model.module, delay_s), model.class_names,
                       input_size=model.input_size)


def test_split_batch_keeps_batched_tensors_and_drops_the_rest():
    out = {"a": torch.arange(6).reshape(3, 2), "extra": object(), "pair": (torch.zeros(3, 1), torch.ones(1))}
    one = split_batch(out, 1, 3)
    assert one["a"].tolist() == [[2, 3]] and "extra" not in one
    assert one["pair"][0].shape == (1, 1) and one["pair"][1] is None


def test_one_forward_per_batch_and_results_equal_single_camera_results():
    inst, sem = _counting(tiny_instance()), _counting(tiny_semantic())
    config = EngineConfig(input_sizes=SIZES, score_threshold=0.0)
    single = Engine(config, tiny_instance(), tiny_semantic())
    engine = BatchedEngine(config, CAMERAS, inst, sem)
    frames = [(camera, _image(seed=k), "rgb8") for k, camera in enumerate(CAMERAS)]
    results = engine.process_batch(frames, tags=CAMERAS)
    assert inst.module.batch_sizes == [3] and sem.module.batch_sizes == [3]
    for (camera, image, encoding), have in zip(frames, results):
        assert have.tag == camera
        _assert_same(single.process(image, encoding), have)
    assert all(engine.stats[c].frames_out == 1 for c in CAMERAS)


def test_frames_of_different_sizes_run_in_one_forward_per_shape():
    inst = _counting(tiny_instance())
    config = EngineConfig(input_sizes={"instance": SIZE}, score_threshold=0.0)
    engine = BatchedEngine(config, CAMERAS, inst)
    small, large = _image(64, 96), _image(128, 128, seed=3)   # 64x96 and 64x64 network inputs
    results = engine.process_batch([("front", small, "rgb8"), ("rear", large, "rgb8"), ("left", small, "bgr8")])
    assert sorted(inst.module.batch_sizes) == [1, 2]
    assert results[1].instances.ids.shape == (128, 128)
    single = Engine(config, tiny_instance())
    np.testing.assert_allclose(single.process(large, "rgb8").instances.scores, results[1].instances.scores, atol=1e-4)


def test_pipelined_batches_publish_under_their_camera_and_equal_single_results():
    config = EngineConfig(input_sizes=SIZES, score_threshold=0.0, lossless=True)
    single = Engine(config, tiny_instance(), tiny_semantic())
    got, lock = {c: [] for c in CAMERAS}, threading.Lock()

    def on_result(camera, result):
        with lock:
            got[camera].append(result)
    inst = _counting(tiny_instance())
    engine = BatchedEngine(config, CAMERAS, inst, tiny_semantic(), on_result=on_result)
    engine.start()
    try:
        feeders = [threading.Thread(target=lambda c=c, k=k: [engine.submit(c, _image(seed=10 * k + i), "rgb8", tag=i)
                                                             for i in range(3)]) for k, c in enumerate(CAMERAS)]
        for feeder in feeders:
            feeder.start()
        for feeder in feeders:
            feeder.join()
        assert engine.wait_idle(60)
    finally:
        engine.stop()
    for k, camera in enumerate(CAMERAS):
        assert [r.tag for r in got[camera]] == [0, 1, 2]
        for i, have in enumerate(got[camera]):
            _assert_same(single.process(_image(seed=10 * k + i), "rgb8"), have)
        assert engine.stats[camera].frames_out == 3 and engine.stats[camera].frames_dropped == 0
    assert max(inst.module.batch_sizes) > 1          # frames of several cameras did share a forward
    assert engine.batched_frames == 9


def test_a_flooding_camera_has_its_drops_counted_and_the_others_are_still_served():
    slow = _counting(tiny_instance(), delay_s=0.05)
    engine = BatchedEngine(EngineConfig(input_sizes={"instance": SIZE}), CAMERAS, slow)
    engine.start()
    try:
        for i in range(40):
            engine.submit("front", _image(seed=i), "rgb8")
            if i % 10 == 0:
                engine.submit("rear", _image(seed=i), "rgb8")
            time.sleep(0.005)
        assert engine.wait_idle(30)
    finally:
        engine.stop()
    front, rear, left = (engine.stats[c].snapshot() for c in CAMERAS)
    assert front.frames_dropped > 0 and front.frames_in == 40
    assert front.frames_out + front.frames_dropped == 40          # none lost without a count
    assert rear.frames_in == 4 and rear.frames_out + rear.frames_dropped == 4 and rear.frames_out >= 1
    assert left.frames_in == 0


def test_stop_counts_waiting_frames_as_dropped_on_their_camera():
    engine = BatchedEngine(EngineConfig(input_sizes={"instance": SIZE}), CAMERAS, tiny_instance())
    engine.submit("left", _image(), "rgb8")     # never started: the frame waits in its slot
    engine.stop()
    assert engine.stats["left"].frames_dropped == 1 and engine.in_flight == 0


def test_a_camera_whose_outputs_closed_has_its_finished_frames_counted_as_dropped():
    from ros_amf.runtime.outputs import OutputsClosed

    def on_result(camera, result):
        if camera == "left":
            raise OutputsClosed("camera left: the node is deactivating")
    engine = BatchedEngine(EngineConfig(input_sizes={"instance": SIZE}, lossless=True), CAMERAS, tiny_instance(),
                           on_result=on_result)
    engine.start()
    try:
        for camera in CAMERAS:
            engine.submit(camera, _image(), "rgb8")
        assert engine.wait_idle(30)
    finally:
        engine.stop()
    left, other = engine.stats["left"], engine.stats[CAMERAS[1]]
    assert (left.frames_out, left.frames_dropped, sum(left.failed.values())) == (0, 1, 0)
    assert (other.frames_out, other.frames_dropped) == (1, 0)


def test_wrong_camera_lists_and_names_are_clear_errors():
    with pytest.raises(ValueError, match="each once"):
        BatchedEngine(EngineConfig(input_sizes={"instance": SIZE}), ["a", "a"], tiny_instance())
    engine = BatchedEngine(EngineConfig(input_sizes={"instance": SIZE}), CAMERAS, tiny_instance())
    with pytest.raises(KeyError, match="not one of this engine's cameras"):
        engine.submit("roof", _image(), "rgb8")


def test_output_scale_network_gives_network_sized_maps_and_camera_pixel_boxes():
    image = _image(192, 288, seed=5)    # three times the 64x96 network input
    full = Engine(EngineConfig(input_sizes=SIZES, score_threshold=0.0), tiny_instance(), tiny_semantic())
    small = Engine(EngineConfig(input_sizes=SIZES, score_threshold=0.0, output_scale="network"),
                   tiny_instance(), tiny_semantic())
    a, b = full.process(image, "rgb8"), small.process(image, "rgb8")
    assert a.semantic.labels.shape == (192, 288) and b.semantic.labels.shape == (64, 96)
    assert b.instances.ids.shape == (64, 96)
    # the same instances, boxes in camera pixels within one network pixel (3 camera pixels)
    assert a.instances.classes.tolist() == b.instances.classes.tolist() and len(b.instances.classes) > 0
    assert np.abs(a.instances.boxes - b.instances.boxes).max() <= 3
    assert b.instances.boxes[:, 2].max() <= 287 and b.instances.boxes[:, 3].max() <= 191
    # the label map at network scale is the full one sampled at the network grid
    assert (a.semantic.labels[1::3, 1::3] == b.semantic.labels).mean() >= 0.98
    with pytest.raises(ValueError, match="output_scale 'half' is not known"):
        EngineConfig(output_scale="half")


class BlockingForward(CountingForward):
    """A forward that waits for ``release`` on its first call: a stage call that outlives a stop's join."""

    def __init__(self, module: nn.Module):
        super().__init__(module)
        self.reached, self.release = threading.Event(), threading.Event()

    def forward(self, images):
        if not self.reached.is_set():
            self.reached.set()
            self.release.wait(10)
        return super().forward(images)


def test_a_batch_held_by_a_thread_that_outlives_a_stop_is_counted_once_and_does_not_touch_the_next_count():
    """A forward outlasting stop's join: the stop counts its frame as dropped at once (frames_in == out + dropped
    + failed right after stop), the straggler neither publishes nor counts it again when it finishes, and it does
    not lower the count of a frame submitted after the stop (wait_idle would return before that frame is done)."""
    blocking = BlockingForward(tiny_instance().module)
    model = tiny_instance()
    published = []
    engine = BatchedEngine(EngineConfig(input_sizes={"instance": SIZE}), CAMERAS,
                           LoadedModel(model.task, model.name, blocking, model.class_names, input_size=SIZE),
                           on_result=lambda camera, result: published.append((camera, result.tag)))
    engine._stage_threads.join_timeout_s = 0.05
    engine.start()
    engine.submit("front", _image(), "rgb8", tag=0)
    assert blocking.reached.wait(10)         # frame 0 is in the forward
    engine.stop()                             # returns while the forward goes on
    front = engine.stats["front"]
    assert (front.frames_in, front.frames_out, front.frames_dropped) == (1, 0, 1)
    engine.submit("rear", _image(seed=1), "rgb8", tag=1)   # waits in its slot for the next start
    blocking.release.set()
    for thread in engine._stage_threads._threads:   # the straggler finishes its batch
        thread.join(10)
    assert (front.frames_out, front.frames_dropped) == (0, 1) and published == []
    assert engine.in_flight == 1              # frame 1 still counted
    engine.start()
    try:
        assert engine.wait_idle(10)
    finally:
        engine.stop()
    assert published == [("rear", 1)]
    rear = engine.stats["rear"]
    assert (rear.frames_in, rear.frames_out, rear.frames_dropped) == (1, 1, 0) and engine.in_flight == 0
