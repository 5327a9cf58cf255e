"""Shared training utilities: no decay on norms, LR schedule, NaN guard, data order, logs, resume."""
from pathlib import Path
import json

import torch
from torch import nn

from ros_amf.training import common


def _tiny_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


def test_norms_and_biases_get_no_weight_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = common.param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight+bias, linear bias


def test_warmup_is_linear_then_steps_down():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = common.warmup_step_scheduler(opt, warmup_iters=10, milestones=[20, 30], gamma=0.1, warmup_factor=0.0)
    lrs = []
    for _ in range(35):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and abs(lrs[5] - 0.5) < 1e-9 and lrs[10] == 1.0
    assert abs(lrs[25] - 0.1) < 1e-9 and abs(lrs[32] - 0.01) < 1e-9


def test_guard_skips_nan_steps_and_counts_them():
    param = nn.Parameter(torch.ones(3))
    model = nn.Module()
    model.p = param
    opt = torch.optim.SGD([param], lr=0.1)
    guard = common.GradientGuard(max_norm=1.0)
    (param * float("nan")).sum().backward()
    guard.step(model, opt, None)
    assert guard.skipped == 1 and torch.equal(param.data, torch.ones(3))
    (param * 100).sum().backward()
    norm = guard.step(model, opt, None)
    assert norm > 1.0 and guard.skipped == 1
    assert torch.allclose(param.data, torch.ones(3) - 0.1 / 3 ** 0.5, atol=1e-5)  # clipped to norm 1


def test_guard_does_not_count_the_grad_scalers_own_overflow_back_offs():
    param = nn.Parameter(torch.ones(3))
    model = nn.Module()
    model.p = param
    opt = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    guard = common.GradientGuard()
    loss = (param * 1e36).sum()                   # finite, but times the scale its gradients overflow
    scaler.scale(loss).backward()
    guard.step(model, opt, scaler, loss)
    assert guard.skipped == 0 and scaler.get_scale() == 2.0 ** 15 and torch.equal(param.data, torch.ones(3))
    loss = (param * float("nan")).sum()           # a non-finite loss is counted
    scaler.scale(loss).backward()
    guard.step(model, opt, scaler, loss)
    assert guard.skipped == 1 and torch.equal(param.data, torch.ones(3))


def test_guard_counts_non_finite_gradients_the_scaler_cannot_explain_by_overflow():
    """A finite loss with a NaN gradient (sqrt at 0): the scaler backs off every step; once its scale is below 1
    the gradients are being shrunk, so the non-finite ones are real and every such step is counted."""
    param = nn.Parameter(torch.zeros(3))
    model = nn.Module()
    model.p = param
    opt = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    guard = common.GradientGuard()
    counted = []
    for _ in range(6):
        loss = (param.sqrt() * 0.0).sum()            # 0 forward, NaN backward (0 * inf)
        scaler.scale(loss).backward()
        guard.step(model, opt, scaler, loss)
        counted.append(guard.skipped)
    assert torch.isfinite(loss) and torch.equal(param.data, torch.zeros(3))
    assert counted == [0, 0, 0, 1, 2, 3]            # scales 4, 2, 1 look like overflow; 0.5, 0.25, ... cannot


def test_sampler_resumes_with_identical_order_and_shards_ranks():
    sampler = common.ResumableSampler(7, seed=3)
    stream = iter(sampler)
    first = [next(stream) for _ in range(10)]
    state = sampler.state_dict()
    rest = [next(stream) for _ in range(9)]
    resumed = common.ResumableSampler(7, seed=3)
    resumed.load_state_dict(state)
    resumed_stream = iter(resumed)
    assert [next(resumed_stream) for _ in range(9)] == rest
    stream2 = iter(common.ResumableSampler(7, seed=3))
    assert [next(stream2) for _ in range(19)] == first + rest
    assert sorted(i for i, e in first[:7]) == list(range(7))  # an epoch is a permutation
    shards = []
    for rank in range(2):
        rank_stream = iter(common.ResumableSampler(7, seed=3, rank=rank, world_size=2))
        shards.append([next(rank_stream)[0] for _ in range(4)])  # 4 = ceil(7 / 2) per rank per epoch
    assert set(shards[0]) | set(shards[1]) == set(range(7))  # together the ranks cover the epoch


def test_logger_writes_every_term_and_drops_rows_after_resume_point(tmp_path):
    log = common.MetricLogger(tmp_path)
    for it in range(1, 6):
        log.log({"iter": it, "loss": it * 1.0, "loss_dice": torch.tensor(0.5)})
    log.log({"iter": 6, "loss": 6.0, "loss_dice": 0.5, "loss_new": 1.0})
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "iter,loss,loss_dice,loss_new"
    resumed = common.MetricLogger(tmp_path, resume_iteration=3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [1, 2, 3] and resumed.rows == rows
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4


def test_training_checkpoint_restores_model_optimizer_rng_and_sampler(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(common.param_groups(model, 0.05), lr=1e-2)
    sched = common.warmup_step_scheduler(opt, 2, [5])
    sampler = common.ResumableSampler(5, seed=1)
    stream = iter(sampler)
    for _ in range(3):
        next(stream)
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
    path = common.save_training_checkpoint(tmp_path / "last.pt", task="instance", model=model, model_config={},
                                           class_names=["a"], optimizer=opt, scheduler=sched, scaler=None,
                                           iteration=3, sampler=sampler)
    expected_noise = torch.randn(2)
    expected_next = next(stream)
    model2 = nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(common.param_groups(model2, 0.05), lr=1e-2)
    sched2 = common.warmup_step_scheduler(opt2, 2, [5])
    sampler2 = common.ResumableSampler(5, seed=1)
    payload = common.load_training_checkpoint(path, task="instance", model=model2, optimizer=opt2, scheduler=sched2,
                                              sampler=sampler2)
    assert payload["train_state"]["iteration"] == 3
    assert torch.equal(torch.randn(2), expected_noise)
    assert next(iter(sampler2)) == expected_next
    assert torch.equal(model2.weight, model.weight)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt2.state_dict()["state"][0]["exp_avg"].allclose(opt.state_dict()["state"][0]["exp_avg"])


def test_single_process_distributed_init_is_a_noop(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = common.init_distributed(prefer_cuda=False)
    assert info.world_size == 1 and info.is_main and info.device.type == "cpu"
    model = nn.Linear(2, 2)
    assert common.wrap_ddp(model, info) is model
    assert not common.amp_enabled(info.device)


_TWO_RANKS = '''
import sys, torch
from torch import nn
from ros_amf.training import common
info = common.init_distributed(prefer_cuda=False)
common.seed_everything(7 + info.rank)                      # as fit() seeds: each rank its own draws
model = nn.Linear(3, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
sched = common.warmup_step_scheduler(opt, 0, [])
torch.randn(5)
states = common.gather_rng_states()
if info.is_main:
    common.save_training_checkpoint(sys.argv[1], task="instance", model=model, model_config={}, class_names=["a"],
                                    optimizer=opt, scheduler=sched, scaler=None, iteration=1, rng_per_rank=states)
expected = torch.randn(3)
torch.distributed.barrier()
common.load_training_checkpoint(sys.argv[1], task="instance", model=model)
resumed = torch.randn(3)
if info.is_main:   # a single-process checkpoint resumed under DDP: rank 0's state, the others re-seeded from it
    common.save_training_checkpoint(sys.argv[1] + ".single", task="instance", model=model, model_config={},
                                    class_names=["a"], optimizer=opt, scheduler=sched, scaler=None, iteration=1)
torch.distributed.barrier()
common.load_training_checkpoint(sys.argv[1] + ".single", task="instance", model=model)
single = torch.randn(3)
torch.save({"expected": expected, "resumed": resumed, "single": single}, f"{sys.argv[1]}.rank{info.rank}")
torch.distributed.destroy_process_group()
'''


def test_a_ddp_resume_gives_every_rank_its_own_random_state_back(tmp_path):
    """Two CPU ranks (gloo, torchrun): after a resume each rank draws what it would have drawn, not rank 0's."""
    import os
    import subprocess
    import sys as _sys
    script = tmp_path / "two_ranks.py"
    script.write_text(_TWO_RANKS)
    torchrun = Path(_sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}   # this machine only
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(script),
                           str(tmp_path / "last.pt")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    draws = [torch.load(tmp_path / f"last.pt.rank{rank}") for rank in (0, 1)]
    assert not torch.equal(draws[0]["expected"], draws[1]["expected"])   # the ranks draw differently
    for draw in draws:
        assert torch.equal(draw["resumed"], draw["expected"])
    assert not torch.equal(draws[0]["single"], draws[1]["single"])    # never every rank the same draws
