"""Dispatches per forward: how many ATen ops one forward pass sends through the dispatcher.

On a GPU every op that is not a view is (at least) one kernel launch, and the Python + dispatcher
cost of each is paid on the host whatever the kernel's size, so a model whose kernels are small is
launch-bound: the GPU waits for Python. Counting the ops a forward dispatches is therefore the
launch figure, and it can be taken without a GPU. On the ``meta`` device (shapes only, no data) it
is also instant for any input size; modules choose their accelerator code path there (see
``ros_amf.modeling.semantic.afma``), so the count is the GPU's.

    count = count_dispatches(model, height=736, width=1280)     # meta device, eval mode, no grad
    count.total, count.kernels, count.by_op.most_common(5)

The model runs once before counting, so per-shape caches (the DCN sampling grid) are built as they
are in a running node, and the count is the steady-state one per frame.
"""
from __future__ import annotations

import collections
import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# ops that only make a new tensor header over the same memory, or only allocate: no kernel on any device
_NO_KERNEL = {aten.detach, aten.alias, aten._unsafe_view, aten.lift_fresh, aten._reshape_alias,
              aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided}


def launches_kernel(func) -> bool:
    """False for views, metadata-only ops and bare allocations (they run nothing on a device)."""
    return not (func.is_view or func.overloadpacket in _NO_KERNEL)


@dataclass
class DispatchCount:
    total: int = 0                  # every op dispatched, views included
    kernels: int = 0                # ops that run work on a device (not views, not bare allocations)
    by_op: collections.Counter = field(default_factory=collections.Counter)   # kernel ops by name

    def as_dict(self, top: int = 10) -> dict:
        return {"dispatches": self.total, "kernels": self.kernels, "top_ops": dict(self.by_op.most_common(top))}


class DispatchCounter(TorchDispatchMode):
    """Counts the ops dispatched while active (``with DispatchCounter() as counter: ...``)."""

    def __init__(self):
        super().__init__()
        self.count = DispatchCount()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count.total += 1
        if launches_kernel(func):
            self.count.kernels += 1
            self.count.by_op[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count_dispatches(model: nn.Module, height: int, width: int, device: str | torch.device = "meta",
                     batch: int = 1, dtype: torch.dtype = torch.float32) -> DispatchCount:
    """Ops dispatched by one eval-mode, no-grad forward of a copy of ``model`` on a batch x 3 x H x W input.

    ``device`` "meta" (default) needs no memory and no time; "cpu" runs the real numbers (slower,
    same count unless a module picks a different path for the CPU). The model itself is not moved."""
    device = torch.device(device)
    counted = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    images = torch.zeros(batch, 3, height, width, device=device, dtype=dtype)
    with torch.no_grad():
        counted(images)      # warm-up: per-shape caches are built once per camera shape, not per frame
        with DispatchCounter() as counter:
            counted(images)
    return counter.count
