"""Joint mode (one backbone forward feeds both heads) under concurrency: every frame keeps its own features."""
import numpy as np
import pytest
import torch

from ros_amf.data.synthetic.render import render_still
from ros_amf.modeling.backbones.resnet import ResNetEncoder
from ros_amf.runtime.pipeline import Engine, EngineConfig
from runtime_helpers import tiny_instance, tiny_semantic

FRAMES = 60


@pytest.fixture(scope="module")
def street_frames():
    return [render_still(seed=3, index=i, width=192, height=144).image for i in range(FRAMES)]


@pytest.mark.parametrize("workers", [2, 4])
def test_pipelined_joint_mode_equals_synchronous_joint_mode_on_street_frames(street_frames, workers):
    config = EngineConfig(joint=True, score_threshold=0.0, lossless=True, inference_workers=workers)
    sync = Engine(config, tiny_instance(seed=1), tiny_semantic(seed=2))
    expected = [sync.process(image, "rgb8") for image in street_frames]
    got = []
    engine = Engine(config, tiny_instance(seed=1), tiny_semantic(seed=2), on_result=got.append)
    engine.start()
    try:
        for i, image in enumerate(street_frames):
            engine.submit(image, "rgb8", tag=i)
        assert engine.wait_idle(120)
    finally:
        engine.stop()
    assert [r.tag for r in got] == list(range(FRAMES))
    wrong = [i for i, (want, have) in enumerate(zip(expected, got))
             if not (np.array_equal(want.semantic.labels, have.semantic.labels)
                     and np.array_equal(want.instances.ids, have.instances.ids)
                     and np.array_equal(want.instances.classes, have.instances.classes)
                     and np.array_equal(want.instances.scores, have.instances.scores))]
    assert wrong == [], f"{len(wrong)} of {FRAMES} frames differ from synchronous joint mode"
    assert all(len(r.instances.scores) > 0 for r in expected)   # the comparison compares something


def test_loaded_models_serve_several_engines_joint_or_not():
    inst, sem = tiny_instance(seed=1), tiny_semantic(seed=2)
    image = render_still(seed=3, index=0, width=192, height=144).image
    before = Engine(EngineConfig(score_threshold=0.0), inst, sem).process(image, "rgb8")
    joint = [Engine(EngineConfig(joint=True, score_threshold=0.0), inst, sem).process(image, "rgb8")
             for _ in range(2)]   # a second joint engine on the same models (the benchmark builds two)
    assert joint[0].error is None and np.array_equal(joint[0].semantic.labels, joint[1].semantic.labels)
    assert isinstance(inst.module.backbone, ResNetEncoder) and isinstance(sem.module.encoder, ResNetEncoder)
    after = Engine(EngineConfig(score_threshold=0.0), inst, sem).process(image, "rgb8")
    assert np.array_equal(before.semantic.labels, after.semantic.labels)
    assert np.array_equal(before.instances.ids, after.instances.ids)


def test_a_joint_head_called_on_its_own_says_how_to_call_it():
    engine = Engine(EngineConfig(joint=True), tiny_instance(seed=1), tiny_semantic(seed=2))
    with pytest.raises(RuntimeError, match="call the JointModel"):
        engine.stages.joint.semantic_head(torch.zeros(1, 3, 64, 96))


def test_a_joint_graph_is_calibrated_and_checked_with_the_normalisation_its_weights_expect():
    """EfficientNet-Lite weights expect [-1, 1] pixels: the joint model must say so (pixels_of), or INT8
    calibration and the export checks run on ImageNet-normalised frames the engine never feeds; the graph cache
    key (weights digest) changes with it, so an ImageNet-calibrated graph is not reused."""
    from ros_amf.modeling.sparseinst.model import build_instance_model
    from ros_amf.runtime.backends_export import sample_input, weights_digest
    from ros_amf.runtime.loading import joint_model, pixels_of
    from runtime_helpers import tiny_config

    minus_one_to_one = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    instance = build_instance_model(tiny_config("instance", pixel_normalisation=minus_one_to_one)).eval()
    semantic = tiny_semantic(pixel_normalisation=minus_one_to_one).module
    joint, _ = joint_model(instance, semantic)
    pixels = pixels_of(joint)
    assert pixels.mean == (0.5, 0.5, 0.5) and pixels.std == (0.5, 0.5, 0.5)
    frame = sample_input((64, 96), pixels=pixels)
    assert frame.min() >= -1.0 - 1e-6 and frame.max() <= 1.0 + 1e-6 and frame.min() < -0.5
    assert sample_input((64, 96)).max() > 1.5                        # the ImageNet range it used to get
    import dataclasses

    from ros_amf.contract.pixels import IMAGENET
    digest = weights_digest(joint)
    joint.cfg = dataclasses.replace(joint.cfg, pixel_normalisation=IMAGENET)   # the same weights, other pixels
    assert weights_digest(joint) != digest
