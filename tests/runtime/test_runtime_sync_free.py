"""The hot path does not make the host wait for the device, and the fixed-size post-processing that
allows it publishes what the earlier data-dependent one did.

On a GPU an op whose result size or value the host needs (``.item()``, ``nonzero``, boolean
indexing, a tensor made from host data, a device->host copy) stalls the host until the device has
caught up. A dispatch-mode counter finds them on the CPU too, where the same ops are dispatched.
"""
import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from ros_amf.data.synthetic.render import render_still
from ros_amf.runtime import stages
from ros_amf.runtime.loading import load_model
from ros_amf.runtime.outputs import HostCopy, instance_output, instance_table
from ros_amf.runtime.pipeline import Engine, EngineConfig
from ros_amf.runtime.preprocess import Geometry
from runtime_helpers import ScriptedInstanceModel, scripted

aten = torch.ops.aten
_VALUE_READS = {aten.item, aten._local_scalar_dense, aten.is_nonzero, aten.equal}
_DATA_DEPENDENT_SIZES = {aten.nonzero, aten.argwhere, aten.masked_select, aten._unique2, aten.unique_consecutive,
                         aten.unique_dim}
_INDEXING = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}


class HostSyncCounter(TorchDispatchMode):
    """Counts the dispatched ops that would make the host wait for a GPU."""

    def __init__(self):
        super().__init__()
        self.found: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in _VALUE_READS or packet in _DATA_DEPENDENT_SIZES:
            self.found[str(func)] += 1
        elif func in (aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor) \
                and kwargs.get("output_size") is None:      # repeats held in a tensor: size unknown to the host
            self.found[str(func)] += 1
        elif packet in _INDEXING and any(torch.is_tensor(i) and i.dtype in (torch.bool, torch.uint8)
                                         for i in args[1] or []):
            self.found[f"{func} (boolean mask)"] += 1
        elif packet is aten.lift_fresh:     # torch.tensor(...) / from_numpy: host data copied in, blocking
            self.found[str(func)] += 1
        elif packet is aten._to_copy and args[0].device.type != "cpu" and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cpu":    # .cpu(), .to("cpu"), .tolist() on a GPU
            self.found[f"{func} (device->host)"] += 1
        elif packet is aten.copy_ and args[0].device.type == "cpu" and args[1].device.type != "cpu":
            self.found[f"{func} (device->host)"] += 1
        return func(*args, **kwargs)

    def total(self) -> int:
        return sum(self.found.values())


@pytest.fixture(scope="module")
def shipped():
    return (load_model("instance", "models/amf_sparseinst_r18slim.yaml", "models/amf_sparseinst_r18slim.pt"),
            load_model("semantic", "models/fpn_afma_r18slim.yaml", "models/fpn_afma_r18slim.pt"))


@pytest.mark.parametrize("mode", [{}, {"device_path": True}, {"joint": True}], ids=["cpu", "device_path", "joint"])
def test_one_frame_waits_for_the_device_at_most_once_per_model(shipped, monkeypatch, mode):
    copies = []

    class CountedCopy(HostCopy):   # the frame's device->host copy: a no-op on a CPU, so counted here
        def __init__(self, *args, **kwargs):
            copies.append(1)
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(stages, "HostCopy", CountedCopy)
    engine = Engine(EngineConfig(**mode), *shipped)
    image = render_still(seed=0, index=3).image
    assert engine.process(image, "rgb8").error is None     # warm-up: first-call allocations are not per frame
    copies.clear()
    with HostSyncCounter() as counter:
        result = engine.process(image, "rgb8")
    assert result.error is None and len(result.instances.scores) > 0
    assert counter.total() + len(copies) <= 2, dict(counter.found)
    if mode.get("device_path"):    # the GPU's code: nothing but the one packed copy
        assert counter.total() == 0 and len(copies) == 1, dict(counter.found)


def _reference(outputs, geometry: Geometry, threshold=0.3, mask_threshold=0.45, max_instances=100):
    """The runtime's post-processing before it had a fixed size (prescreen, boolean indexing, painting)."""
    logits, masks, objectness = (outputs[k].float() for k in ("pred_logits", "pred_masks", "pred_scores"))
    best = torch.sqrt(torch.sigmoid(logits[0]) * torch.sigmoid(objectness[0])).amax(-1)
    probs = torch.sigmoid(masks[0])
    binary = probs > mask_threshold
    maskness = (probs * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1e-6)
    hopeful = best * maskness >= threshold * 0.98
    logits, masks, objectness = logits[0, hopeful], masks[0, hopeful], objectness[0, hopeful]
    scores, classes = torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(objectness)).topk(1, dim=-1)
    scores, classes = scores.flatten(), classes.flatten()
    keep = scores > threshold
    scores, classes = scores[keep], classes[keep]
    probs = torch.sigmoid(masks[keep])
    binary = probs > mask_threshold
    scores = scores * (probs * binary).flatten(1).sum(-1) / binary.flatten(1).sum(-1).clamp(min=1e-6)
    order = scores.argsort(descending=True)[:max_instances]
    scores, classes, probs = scores[order], classes[order], probs[order]
    (valid_h, valid_w), (out_h, out_w) = geometry.resized_hw, geometry.original_hw
    probs = F.interpolate(probs[:, None], size=(masks.shape[-2] * 4, masks.shape[-1] * 4), mode="bilinear",
                          align_corners=False)[:, :, :valid_h, :valid_w]
    final = F.interpolate(probs, size=(out_h, out_w), mode="bilinear", align_corners=False)[:, 0] > mask_threshold
    keep = (scores >= threshold) & final.flatten(1).any(1)
    final, scores, classes = final[keep], scores[keep], classes[keep]
    order = torch.argsort(scores, descending=True)
    final, scores, classes = final[order], scores[order], classes[order]
    ids = torch.zeros((out_h, out_w), dtype=torch.int32)
    for k in range(len(scores) - 1, -1, -1):
        ids.masked_fill_(final[k], k + 1)
    return ids.numpy(), classes.numpy(), scores.numpy(), final.numpy()


@pytest.mark.parametrize("device_path", [False, True])
def test_fixed_size_postprocessing_publishes_what_the_old_one_did_on_the_shipped_model(shipped, device_path):
    instance = shipped[0]
    outputs = []
    hook = instance.module.register_forward_hook(lambda module, args, out: outputs.append(out))
    try:
        engine = Engine(EngineConfig(keep_masks=True, device_path=device_path), instance=instance)
        for index in range(4):
            result = engine.process(render_still(seed=5, index=index).image, "rgb8")
            ids, classes, scores, masks = _reference(outputs[-1], result.geometries["instance"])
            found = result.instances
            assert len(classes) > 0
            assert np.array_equal(found.classes, classes)
            # float32 maskness sums over another number of candidates may round differently in the last bit
            np.testing.assert_allclose(found.scores, scores, rtol=1e-6, atol=0)
            assert np.array_equal(found.masks, masks) and np.array_equal(found.ids, ids)
    finally:
        hook.remove()


def test_instance_nan_is_found_in_the_packed_copy():
    model = ScriptedInstanceModel(boxes=[(8, 8, 40, 32)], classes=[0], scores=[0.9], fill=float("nan"))
    engine = Engine(EngineConfig(device_path=True), instance=scripted("instance", model))
    result = engine.process(np.zeros((64, 96, 3), np.uint8), "rgb8")
    assert "pred_logits" in result.error and engine.stats.failed["non_finite_output"] == 1


def test_more_than_254_slots_give_a_uint16_id_image():
    slots = 300
    masks = torch.zeros(slots, 20, 20, dtype=torch.bool)
    masks.view(slots, -1)[torch.arange(slots), torch.arange(slots)] = True   # one pixel each
    scores = torch.linspace(1.0, 0.5, slots)
    table = instance_table(masks, scores, torch.zeros(slots, dtype=torch.long), torch.ones(slots, dtype=torch.bool))
    found = instance_output(HostCopy(table.tensors(), pack=True).arrays())
    assert found.ids.dtype == np.uint16 and len(found.scores) == slots
    assert found.ids.reshape(-1)[:slots].tolist() == list(range(1, slots + 1))
