"""The engine's stages, its pipelined and synchronous modes, overload and fault handling."""
import threading
import time

import numpy as np
import pytest
import torch

from ros_amf.runtime.pipeline import Engine, EngineConfig, LatestSlot
from ros_amf.runtime import stages
from ros_amf.runtime.outputs import HostCopy, instance_output, instance_table, overlay, semantic_labels
from ros_amf.runtime.preprocess import InputSize, plan_geometry
from runtime_helpers import (ScriptedInstanceModel, ScriptedSemanticModel, scripted, tiny_instance,
                             tiny_semantic)

SIZE = InputSize(64, 96)
SIZES = {"instance": SIZE, "semantic": SIZE}


def _image(h=64, w=96, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _instances(masks, scores, classes, class_filter=None, min_score=0.0):
    """The runtime's instance table of these candidates, as the host receives it."""
    table = instance_table(masks, scores, classes, scores >= min_score, class_filter, keep_masks=True)
    return instance_output(HostCopy(table.tensors(), pack=False).arrays())


def test_higher_score_owns_overlapping_pixels_and_boxes_are_tight():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:6, 2:8] = True      # low score
    masks[1, 4:9, 5:11] = True     # high score, overlaps the first
    found = _instances(masks, torch.tensor([0.4, 0.9]), torch.tensor([1, 2]))
    ids, classes, scores, boxes, areas = found.ids, found.classes, found.scores, found.boxes, found.areas
    assert scores.tolist() == pytest.approx([0.9, 0.4]) and classes.tolist() == [2, 1]
    assert ids[5, 6] == 1 and ids[2, 2] == 2 and ids[0, 0] == 0
    assert boxes.tolist() == [[5, 4, 10, 8], [2, 2, 7, 5]]
    assert areas.tolist() == [30, 24]


def test_empty_masks_and_low_final_scores_are_not_published():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[2, 2:] = True          # masks[1] stays empty
    found = _instances(masks, torch.tensor([0.9, 0.8, 0.2]), torch.tensor([0, 1, 2]), min_score=0.3)
    classes, scores = found.classes, found.scores
    assert classes.tolist() == [0] and scores.tolist() == pytest.approx([0.9])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_size_candidates_give_the_same_instances_as_postprocessing_all(seed):
    from ros_amf.modeling.sparseinst.postprocess import masks_at_image_size, postprocess_instances, rank_candidates
    g = torch.Generator().manual_seed(seed)
    outputs = {"pred_logits": torch.randn(1, 40, 5, generator=g) * 3,
               "pred_masks": torch.randn(1, 40, 16, 24, generator=g) * 4,
               "pred_scores": torch.randn(1, 40, 1, generator=g) * 3}
    args = dict(image_size_hw=(60, 90), output_size_hw=(120, 180), score_threshold=0.3, mask_threshold=0.45)
    full = postprocess_instances(outputs, **args)[0]
    a = _instances(full.masks, full.scores, full.classes, min_score=0.3)
    # the runtime on a GPU: all 40 slots kept (no count read), dead ones masked out on the device
    slots = rank_candidates(outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_scores"][0], 0.3,
                            0.45, max_instances=100, min_score=0.3)
    masks = masks_at_image_size(slots.probs, (60, 90), (120, 180), 0.45)
    table = instance_table(masks, slots.scores, slots.classes, slots.live, keep_masks=True)
    b = instance_output(HostCopy(table.tensors(), pack=True).arrays())   # packed as for the GPU
    assert 0 < len(b.classes) < 40
    for field in ("ids", "classes", "scores", "boxes", "areas", "masks"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_class_filter_keeps_only_named_classes():
    masks = torch.ones(3, 4, 4, dtype=torch.bool)
    classes = _instances(masks, torch.tensor([0.5, 0.6, 0.7]), torch.tensor([0, 1, 2]),
                         class_filter=torch.tensor([0, 2])).classes
    assert sorted(classes.tolist()) == [0, 2]


def test_semantic_labels_come_back_at_the_original_size():
    geometry = plan_geometry(30, 45, InputSize(64, 96))         # resized 64x96, no padding
    logits = torch.zeros(1, 2, 64, 96)
    logits[0, 1, :, 48:] = 1.0
    labels = semantic_labels(logits, geometry)
    assert labels.shape == (30, 45) and labels.dtype == torch.uint8
    assert labels[:, :22].max() == 0 and labels[:, 23:].min() == 1


def test_channel_argmax_equals_torch_argmax_including_ties():
    """The running-maximum label map is argmax(0) exactly: random scores, whole-plane ties (the first class
    wins) and a strided view, as semantic_labels cuts the padding off."""
    from ros_amf.runtime.outputs import channel_argmax

    scores = torch.randn(19, 40, 56, generator=torch.Generator().manual_seed(0))
    scores[:, :10] = torch.round(scores[:, :10])          # many ties in the top rows
    scores[4:7, 20:30] = 5.0                              # a three-way tie: class 4 wins
    view = scores[:, :33, :41]
    assert torch.equal(channel_argmax(view), view.argmax(0).to(torch.uint8))
    assert (channel_argmax(scores)[20:30] == 4).all()


def test_known_masks_give_boxes_and_ids_at_input_resolution():
    model = ScriptedInstanceModel(boxes=[(8, 8, 40, 32), (48, 16, 88, 56)], classes=[0, 2], scores=[0.9, 0.7])
    engine = Engine(EngineConfig(input_sizes=SIZES), instance=scripted("instance", model))
    image = _image(128, 192)   # twice the network size: outputs must be scaled back up
    result = engine.process(image, "rgb8")
    assert result.error is None
    inst = result.instances
    assert inst.ids.shape == (128, 192) and inst.ids.dtype == np.uint8
    assert inst.classes.tolist() == [0, 2]
    assert inst.scores[0] > inst.scores[1] > 0.5
    np.testing.assert_allclose(inst.boxes[0], [16, 16, 79, 63], atol=3)
    np.testing.assert_allclose(inst.boxes[1], [96, 32, 175, 111], atol=3)
    assert engine.stats.frames_out == 1


def test_device_path_without_streams_matches_the_cpu_path():
    inst, sem = tiny_instance(), tiny_semantic()
    cpu = Engine(EngineConfig(input_sizes=SIZES, score_threshold=0.0), inst, sem)
    device = Engine(EngineConfig(input_sizes=SIZES, score_threshold=0.0, device_path=True), inst, sem)
    assert device.streams.copy is None and device.device_path
    image = _image(100, 150)
    a, b = cpu.process(image, "bgr8"), device.process(image, "bgr8")
    assert a.error is None and b.error is None
    assert (a.semantic.labels == b.semantic.labels).mean() > 0.97
    assert len(a.instances.scores) == len(b.instances.scores)
    np.testing.assert_allclose(a.instances.scores, b.instances.scores, atol=0.02)


def test_pipelined_results_equal_synchronous_results():
    inst, sem = tiny_instance(), tiny_semantic()
    config = EngineConfig(input_sizes=SIZES, score_threshold=0.0, lossless=True, inference_workers=2)
    sync = Engine(config, inst, sem)
    expected = [sync.process(_image(seed=i), "rgb8") for i in range(4)]
    got = []
    engine = Engine(config, inst, sem, on_result=got.append)
    engine.start()
    try:
        for i in range(4):
            engine.submit(_image(seed=i), "rgb8", tag=i)
        assert engine.wait_idle(60)
    finally:
        engine.stop()
    assert [r.tag for r in got] == [0, 1, 2, 3]   # two inference workers, outputs still in frame order
    for want, have in zip(expected, got):
        assert np.array_equal(want.semantic.labels, have.semantic.labels)
        assert np.array_equal(want.instances.ids, have.instances.ids)
    assert engine.stats.frames_out == 4 and engine.stats.frames_dropped == 0


def test_overload_drops_oldest_frames_counts_them_and_stays_bounded():
    slow = ScriptedInstanceModel(boxes=[(8, 8, 40, 32)], classes=[0], scores=[0.9], delay_s=0.05)
    engine = Engine(EngineConfig(input_sizes=SIZES), instance=scripted("instance", slow))
    engine.start()
    peak = 0
    try:
        for i in range(40):
            engine.submit(_image(seed=i % 3), "rgb8", tag=i)
            peak = max(peak, engine.in_flight)
            time.sleep(0.002)
        assert engine.wait_idle(30)
    finally:
        engine.stop()
    stats = engine.stats
    assert stats.frames_dropped > 0
    assert stats.frames_in == stats.frames_out + stats.frames_dropped == 40
    # input slot, preprocessing, hand-over slot, frames between inference and post (workers + queue), post
    assert peak <= 1 + 1 + 1 + (engine.inference_workers + 1) + 1


def test_latest_slot_evicts_the_oldest_frame():
    slot = LatestSlot(2)
    assert slot.put("a") is None and slot.put("b") is None
    assert slot.put("c") == "a"
    assert slot.get(0.01) == "b" and slot.get(0.01) == "c" and slot.get(0.01) is None


def test_nan_from_the_model_fails_the_frame_and_the_pipeline_goes_on():
    failures = []
    engine = Engine(EngineConfig(input_sizes=SIZES), semantic=scripted("semantic", ScriptedSemanticModel(nan=True)),
                    on_error=failures.append)
    result = engine.process(_image(), "rgb8")
    assert result.error and "NaN" in result.error
    assert engine.stats.failed["non_finite_output"] == 1 and engine.stats.frames_out == 0
    engine.models["semantic"].module.nan = False
    assert engine.process(_image(), "rgb8").error is None
    assert engine.stats.frames_out == 1 and len(failures) == 1


def test_garbage_model_output_is_counted_not_raised():
    class Garbage(torch.nn.Module):
        def forward(self, x):
            return {"pred_logits": torch.zeros(1, 2, 3)}    # contract broken: keys missing
    engine = Engine(EngineConfig(input_sizes=SIZES), instance=scripted("instance", Garbage()))
    result = engine.process(_image(), "rgb8")
    assert "pred_masks" in result.error and engine.stats.failed["bad_model_output"] == 1


def test_joint_mode_runs_the_backbone_once_and_matches_separate_models_with_shared_weights():
    inst, sem = tiny_instance(seed=1), tiny_semantic(seed=2)
    sem.module.encoder.load_state_dict(inst.module.backbone.state_dict())
    separate = Engine(EngineConfig(input_sizes=SIZES, score_threshold=0.0), inst, sem).process(_image(), "rgb8")
    inst2, sem2 = tiny_instance(seed=1), tiny_semantic(seed=2)
    sem2.module.encoder.load_state_dict(inst2.module.backbone.state_dict())
    calls = []
    inst2.module.backbone.register_forward_hook(lambda *a: calls.append(1))
    engine = Engine(EngineConfig(input_sizes=SIZES, score_threshold=0.0, joint=True), inst2, sem2)
    assert engine.warnings == []
    joint = engine.process(_image(), "rgb8")
    assert len(calls) == 1
    assert np.array_equal(joint.semantic.labels, separate.semantic.labels)
    assert np.array_equal(joint.instances.ids, separate.instances.ids)


def test_joint_mode_refuses_backbones_that_differ():
    with pytest.raises(ValueError, match="identical backbones"):
        Engine(EngineConfig(input_sizes=SIZES, joint=True), tiny_instance(), tiny_semantic(encoder_width=16))


@pytest.mark.parametrize("device_path", [False, True])
def test_each_model_runs_at_its_own_input_size_preprocessed_once_per_size(monkeypatch, device_path):
    calls = []
    for name in ("preprocess_numpy", "preprocess_torch"):
        real = getattr(stages, name)
        monkeypatch.setattr(stages, name, lambda *a, _real=real, **k: calls.append(a[2]) or _real(*a, **k))
    inst = scripted("instance", ScriptedInstanceModel(boxes=[(8, 8, 40, 32)], classes=[0], scores=[0.9]))
    sem = scripted("semantic", ScriptedSemanticModel())
    seen = {}
    for model in (inst, sem):
        model.module.register_forward_pre_hook(lambda module, args, task=model.task: seen.update({task: args[0].shape}))
    semantic_size = InputSize(96, 160)
    shared = Engine(EngineConfig(input_sizes=SIZES, device_path=device_path), inst, sem)
    assert shared.process(_image(), "rgb8").error is None and calls == [SIZE]
    calls.clear()
    engine = Engine(EngineConfig(input_sizes={"instance": SIZE, "semantic": semantic_size}, device_path=device_path),
                    inst, sem)
    result = engine.process(_image(64, 96), "rgb8")
    assert result.error is None and calls == [SIZE, semantic_size]
    assert seen["instance"][-2:] == (64, 96) and seen["semantic"][-2:] == (96, 160)   # 96x144 padded to 160
    assert result.geometries["semantic"].resized_hw == (96, 144)
    assert result.semantic.labels.shape == result.instances.ids.shape == (64, 96)


def test_a_task_without_a_size_runs_at_its_model_configs_own_size():
    engine = Engine(EngineConfig(input_sizes={"instance": InputSize(96, 160)}), tiny_instance(), tiny_semantic())
    assert engine.input_sizes == {"instance": InputSize(96, 160), "semantic": tiny_semantic().input_size}


def test_joint_mode_runs_both_heads_at_the_instance_size_and_says_so():
    inst, sem = tiny_instance(seed=1), tiny_semantic(seed=2)
    sem.module.encoder.load_state_dict(inst.module.backbone.state_dict())
    config = EngineConfig(input_sizes={"instance": SIZE, "semantic": InputSize(96, 160)}, joint=True)
    engine = Engine(config, inst, sem)
    assert engine.input_sizes == {"instance": SIZE, "semantic": SIZE}
    assert len(engine.warnings) == 1 and "semantic input size 96/160 is not used" in engine.warnings[0]
    result = engine.process(_image(), "rgb8")
    assert result.error is None and result.geometries["semantic"] == result.geometries["instance"]


def test_fp16_and_channels_last_options_run_the_same_stages():
    engine = Engine(EngineConfig(input_sizes=SIZES, precision="fp16", channels_last=True, device_path=True),
                    semantic=scripted("semantic", ScriptedSemanticModel()))
    result = engine.process(_image(), "rgb8")
    assert result.error is None
    assert result.semantic.labels[:, :20].max() == 0 and result.semantic.labels[:, -20:].min() == 2


def test_overlay_colours_instances_and_outlines_them():
    image = np.zeros((10, 10, 3), np.uint8)
    ids = np.zeros((10, 10), np.uint8)
    ids[2:6, 2:6] = 1
    out = overlay(image, None, ids, np.zeros((1, 3), np.uint8), np.array([[200, 100, 50]], np.uint8), alpha=0.5)
    assert out[3, 3].tolist() == [100, 50, 25] and out[8, 8].tolist() == [0, 0, 0]


def _run_frames(engine, frames: int) -> None:
    """Start ``engine``, submit ``frames`` frames tagged 0..frames-1, wait until all are settled, stop."""
    engine.start()
    try:
        for i in range(frames):
            engine.submit(_image(), "rgb8", tag=i)
        assert engine.wait_idle(30)
    finally:
        engine.stop()


def test_lossless_mode_processes_every_frame_without_drops():
    slow = ScriptedInstanceModel(boxes=[(8, 8, 40, 32)], classes=[0], scores=[0.9], delay_s=0.02)
    got = []
    engine = Engine(EngineConfig(input_sizes=SIZES, lossless=True, inference_workers=2),
                    instance=scripted("instance", slow), on_result=got.append)
    _run_frames(engine, 12)
    assert [r.tag for r in got] == list(range(12)) and engine.stats.frames_dropped == 0


def test_a_failing_inference_worker_frame_is_counted_and_order_is_kept():
    class FailsOnce(ScriptedInstanceModel):
        calls = 0

        def forward(self, images):
            FailsOnce.calls += 1
            if FailsOnce.calls == 3:
                raise RuntimeError("boom")
            return super().forward(images)
    got = []
    engine = Engine(EngineConfig(input_sizes=SIZES, lossless=True, inference_workers=2),
                    instance=scripted("instance", FailsOnce([(8, 8, 40, 32)], [0], [0.9])), on_result=got.append)
    _run_frames(engine, 6)
    tags = [r.tag for r in got]
    assert len(tags) == 5 and tags == sorted(tags) and engine.stats.failed["inference_error"] == 1


def test_frames_still_inside_at_stop_are_counted_as_dropped():
    slow = ScriptedInstanceModel(boxes=[(8, 8, 40, 32)], classes=[0], scores=[0.9], delay_s=0.3)
    engine = Engine(EngineConfig(input_sizes=SIZES, inference_workers=1), instance=scripted("instance", slow))
    engine.start()
    for i in range(3):
        engine.submit(_image(), "rgb8", tag=i)
        time.sleep(0.05)
    engine.stop()
    stats = engine.stats
    assert stats.frames_in == 3 == stats.frames_out + stats.frames_dropped + sum(stats.failed.values())
    assert engine.in_flight == 0


def test_a_lossless_engine_stopped_while_full_counts_every_frame_it_held():
    """Stopping a lossless engine whose stages wait on each other: the frame pre-processed and waiting for the
    inference queue, the ones in the queues and the one a blocked submit() held all end up counted."""
    slow = ScriptedInstanceModel(boxes=[(8, 8, 40, 32)], classes=[0], scores=[0.9], delay_s=0.4)
    engine = Engine(EngineConfig(input_sizes=SIZES, lossless=True, inference_workers=1),
                    instance=scripted("instance", slow))
    engine.start()
    refused = []

    def feed():
        try:
            for i in range(10):
                engine.submit(_image(), "rgb8", tag=i)
        except RuntimeError as exc:
            refused.append(str(exc))
    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.6)           # every stage and queue is full now, the feeder is blocked
    engine.stop()
    feeder.join(5)
    stats = engine.stats
    assert refused == ["submit() on a stopped engine; call start() first."]
    assert stats.frames_dropped >= 2
    assert stats.frames_in == stats.frames_out + stats.frames_dropped + sum(stats.failed.values())
    assert engine.in_flight == 0


def test_a_frame_whose_consumer_closed_its_outputs_is_counted_as_dropped_not_published():
    """A node deactivating while frames finish raises OutputsClosed from its publish callback."""
    from ros_amf.runtime.outputs import OutputsClosed

    def closed(result):
        raise OutputsClosed("the node is deactivating")
    engine = Engine(EngineConfig(input_sizes=SIZES, lossless=True, inference_workers=1),
                    instance=scripted("instance", ScriptedInstanceModel([(8, 8, 40, 32)], [0], [0.9])),
                    on_result=closed)
    _run_frames(engine, 3)
    stats = engine.stats
    assert (stats.frames_in, stats.frames_out, stats.frames_dropped, sum(stats.failed.values())) == (3, 0, 3, 0)


def test_stage_threads_that_outlive_a_stop_are_waited_for_before_a_restart():
    """A stage call longer than stop's wait (a compile on a new input size) must not leave its thread running
    beside the threads of the next start (a node re-activated)."""
    from ros_amf.runtime.pipeline import StageThreads

    threads = StageThreads("straggler", join_timeout_s=0.05)
    release = threading.Event()

    def worker():
        while threads.running.is_set():
            release.wait(10)                  # one long stage call
    threads.start([("w", worker)])
    time.sleep(0.05)
    threads.stop()                            # returns while the call goes on
    assert [t.name for t in threading.enumerate()].count("straggler-w") == 1
    threading.Timer(0.3, release.set).start()
    discarded = []
    threads.start([("w", worker)], discard_stale=lambda: discarded.append(True))   # waits for the old thread
    assert [t.name for t in threading.enumerate()].count("straggler-w") == 1
    assert discarded == [True]                # and what it handed on after the stop is dropped, not published
    threads.stop()
    assert "straggler-w" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("slow_part", ["postprocess", "publish"])
def test_a_frame_held_by_a_thread_that_outlives_a_stop_is_counted_once(slow_part):
    """Post-processing (or its publish) outlasting stop's join: a frame still in post-processing was counted as
    dropped by the stop and is not published after it; one already being published is counted as published.
    Either way frames_in == out + dropped + failed, and a restart counts only its own frames."""
    reached, release, published = threading.Event(), threading.Event(), []

    def hold(part, tag):
        if part == slow_part and tag == 0:
            reached.set()
            release.wait(10)
    engine = Engine(EngineConfig(input_sizes=SIZES, inference_workers=1),
                    instance=scripted("instance", ScriptedInstanceModel([(8, 8, 40, 32)], [0], [0.9])),
                    on_result=lambda result: (published.append(result.tag), hold("publish", result.tag)))
    postprocess = engine.stages.postprocess

    def slow_postprocess(inferred):
        hold("postprocess", inferred.prepared.frame.tag)
        return postprocess(inferred)
    engine.stages.postprocess = slow_postprocess
    engine._stage_threads.join_timeout_s = 0.05
    engine.start()
    engine.submit(_image(), "rgb8", tag=0)
    assert reached.wait(10)                  # frame 0 is in its slow part
    engine.stop()                            # returns while frame 0 is still held
    release.set()
    for thread in engine._stage_threads._threads:   # the straggler finishes its frame
        thread.join(10)
    stats = engine.stats
    expected = (1, 0, 1) if slow_part == "postprocess" else (1, 1, 0)
    assert (stats.frames_in, stats.frames_out, stats.frames_dropped) == expected
    assert published == ([] if slow_part == "postprocess" else [0])
    engine.start()
    engine.submit(_image(), "rgb8", tag=1)
    assert engine.wait_idle(10)
    engine.stop()
    assert (stats.frames_in, stats.frames_out + stats.frames_dropped, sum(stats.failed.values())) == (2, 2, 0)
    assert published[-1] == 1 and engine.in_flight == 0


@pytest.mark.parametrize("device_path", [False, True])
def test_each_model_gets_the_pixel_normalisation_its_weights_expect(device_path):
    """ImageNet mean/std for the instance model, [-1, 1] for a semantic model on EfficientNet-Lite-style weights:
    one network input per (size, normalisation), on the CPU and the device path alike."""
    semantic = tiny_semantic(pixel_normalisation={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    engine = Engine(EngineConfig(input_sizes=SIZES, device_path=device_path), instance=tiny_instance(),
                    semantic=semantic)
    white = np.full((64, 96, 3), 255, np.uint8)
    prepared = engine.stages.preprocess(engine.make_frame(white, "rgb8"))
    rh, rw = prepared.inputs["semantic"].geometry.resized_hw
    assert torch.allclose(prepared.inputs["semantic"].tensor[0, :, :rh, :rw], torch.tensor(1.0))
    imagenet_white = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(prepared.inputs["instance"].tensor[0, :, 0, 0], imagenet_white, atol=1e-5)
