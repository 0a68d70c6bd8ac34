"""Gradient accumulation and learning-rate schedules of ``spoofdet.training.steps``, without Ray:
N accumulated micro-batches step like one batch N times as large, a non-finite micro-batch skips
its whole step, the schedules follow the seeds' rules (raw AASIST's per-step cosine, Codecfake's
halving) over applied optimizer steps, and the schedule resumes from the checkpoint's state.json
as the train job writes it."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from spoofdet.config import load_train_config
from spoofdet.training.steps import (
    derived_params,
    effective_lr,
    lr_factor,
    lr_scheduler,
    make_lr_scheduler,
    make_step,
    register_lr_scheduler,
    restore_checkpoint,
    train_epoch,
)

DEMO = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "demo.yaml"


def recipe(*overrides):
    return load_train_config(
        DEMO, ["deepspeed.enabled=false", "optim.lr=0.1", *overrides], check_paths=False
    )


def batches(n, rows, seed=0):
    """``n`` micro-batches of ``rows`` (8-dim "waves"), each with the same labels (half bona
    fide), so that every micro-batch's class weights sum alike and the mean of their weighted
    losses is the weighted loss of their concatenation."""
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(rows) % 2
    return [(torch.randn(rows, 8, generator=g), label.clone()) for _ in range(n)]


def setup(cfg, opt=torch.optim.SGD):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    optimizer = opt(model.parameters(), lr=effective_lr(cfg)[0])
    register_lr_scheduler(optimizer, make_lr_scheduler(cfg, optimizer))
    class_w = torch.tensor(cfg.optim.class_weights)
    return model, optimizer, make_step(cfg, model, model, optimizer, class_w)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("clip", [None, 0.05])
def test_accumulated_micro_batches_step_like_one_big_batch(clip):
    n, rows = 4, 6
    extra = [f"optim.grad_clip={clip}"] if clip else []
    big_model, _, big_step = setup(recipe(*extra))
    acc_model, _, acc_step = setup(recipe(f"train.grad_accum_steps={n}", *extra))
    start = weights(acc_model)
    for cycle in range(2):
        micro = batches(n, rows, seed=cycle)
        for i, (wave, label) in enumerate(micro):
            loss, skipped = acc_step(wave, label)
            assert not skipped and math.isfinite(loss.item())
            if cycle == 0 and i < n - 1:  # no optimizer step before the boundary
                assert torch.equal(weights(acc_model), start)
        big_step(torch.cat([w for w, _ in micro]), torch.cat([y for _, y in micro]))
    assert not torch.allclose(weights(acc_model), start)
    torch.testing.assert_close(weights(acc_model), weights(big_model), rtol=1e-5, atol=1e-6)


def test_a_nonfinite_micro_batch_skips_its_whole_step():
    model, optimizer, step = setup(recipe("train.grad_accum_steps=2"))
    start = weights(model)
    (w0, y0), (w1, y1) = batches(2, 4)
    w1 = w1.clone()
    w1[0, 0] = float("nan")
    assert step(w0, y0)[1] is False
    loss, skipped = step(w1, y1)  # the boundary: the accumulated gradients are not finite
    assert skipped and math.isnan(loss.item())
    assert torch.equal(weights(model), start)
    assert all(p.grad is None for p in model.parameters())
    for wave, label in batches(2, 4, seed=1):  # the next cycle starts clean and steps
        assert step(wave, label)[1] is False
    assert torch.isfinite(weights(model)).all() and not torch.equal(weights(model), start)


def test_cosine_is_raw_aasists_per_step_annealing():
    cfg = recipe(
        "optim.lr=1e-4", "optim.schedule=cosine", "optim.min_lr=5e-6", "optim.total_steps=100"
    )
    got = [lr_factor(cfg, k) for k in (0, 25, 50, 100, 150)]
    floor = 0.05
    half = [1.0, floor + (1 - floor) * (1 + math.cos(math.pi / 4)) / 2, 0.525, floor, floor]
    assert got == pytest.approx(half)
    warm = recipe("optim.schedule=cosine", "optim.total_steps=104", "optim.warmup_steps=4")
    assert [lr_factor(warm, k) for k in (0, 1, 3, 4, 54, 104)] == pytest.approx(
        [0.25, 0.5, 1.0, 1.0, 0.5, 0.0]
    )


def test_step_decay_halves_every_step_size_and_constant_is_untouched():
    cfg = recipe("optim.schedule=step", "optim.step_size=3")
    assert [lr_factor(cfg, k) for k in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    constant = recipe()
    assert make_lr_scheduler(constant, torch.optim.SGD([nn.Parameter(torch.zeros(1))])) is None
    assert lr_factor(constant, 10**6) == 1.0


def test_the_schedule_counts_applied_optimizer_steps():
    cfg = recipe("train.grad_accum_steps=2", "optim.schedule=step", "optim.step_size=1")
    model, optimizer, step = setup(cfg)
    micro = batches(6, 4)
    nan_wave = micro[3][0].clone()
    nan_wave[0, 0] = float("nan")
    micro[3] = (nan_wave, micro[3][1])
    lrs = []
    for wave, label in micro:  # steps after micro-batches 2 and 6; 4 is skipped
        step(wave, label)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.05, 0.05, 0.05, 0.05, 0.025])


def test_the_schedule_resumes_from_the_checkpoints_state_json(tmp_path):
    cfg = recipe("optim.schedule=cosine", "optim.total_steps=10", "optim.warmup_steps=2")
    model, optimizer, step = setup(cfg, torch.optim.Adam)
    state = {"epoch": 0, "step": 0}
    labelled = [{"wave": w, "label": y} for w, y in batches(3, 4)]
    counts = train_epoch(
        cfg, step, optimizer, labelled, state, rank=1, world=1, device=torch.device("cpu")
    )
    assert counts["steps"] == 3 and state["step"] == 3
    assert state["lr_scheduler"]["last_epoch"] == 3
    # the checkpoint as ray_jobs/train.py's save_checkpoint writes it without DeepSpeed
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    (tmp_path / "state.json").write_text(json.dumps(state))
    resumed_model, resumed_opt, _ = setup(cfg, torch.optim.Adam)
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(0.05)  # warm-up step 0 of 2
    restore_checkpoint(tmp_path, cfg, resumed_model, resumed_model, resumed_opt, "cpu")
    expected = 0.1 * lr_factor(cfg, 3)
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(expected)
    lr_scheduler(resumed_opt).step()
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(cfg, 4))


def test_derived_params_state_the_global_batch_and_schedule():
    cfg = recipe(
        "train.batch_size=8",
        "scaling.num_workers=2",
        "train.grad_accum_steps=4",
        "optim.lr_scaling=linear",
        "optim.lr=1e-4",
        "optim.schedule=cosine",
        "optim.min_lr=5e-6",
        "data.epoch_size=6400",
        "train.epochs=10",
    )
    assert derived_params(cfg) == {
        "derived.world_size": 2,
        "derived.grad_accum_steps": 4,
        "derived.global_batch_size": 64,
        "derived.effective_lr": pytest.approx(8e-4),
        "derived.lr_schedule": "cosine 0.0008 -> 4e-05 over 1000 optimizer steps (derived)",
        "derived.lr_schedule_steps": 1000,  # 10 epochs x 6400 rows / (8 x 2) / 4
    }


DEEPSPEED_RUN = """
import os, sys, torch, torch.distributed as dist
from torch import nn
sys.path.insert(0, {here!r})
from test_schedules import batches, recipe, weights
from spoofdet.training import steps
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT={port!r})
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo", rank=0, world_size=1)

def build(*extra):
    cfg = recipe("deepspeed.enabled=true", "deepspeed.zero_stage=0", "train.batch_size=6",
                 "optim.schedule=step", "optim.step_size=1", *extra)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=steps.effective_lr(cfg)[0])
    scheduler = steps.make_lr_scheduler(cfg, opt)
    net, opt = steps.deepspeed_engine(cfg, model, opt, torch.device("cpu"))
    steps.register_lr_scheduler(opt, scheduler)
    return model, opt, steps.make_step(cfg, net, model, opt, torch.tensor(cfg.optim.class_weights))

big_model, big_opt, big_step = build()
model, opt, step = build("train.grad_accum_steps=4")
micro = batches(4, 6)
skipped = [step(w, y)[1] for w, y in micro]
big_step(torch.cat([w for w, _ in micro]), torch.cat([y for _, y in micro]))
torch.testing.assert_close(weights(model), weights(big_model), rtol=1e-5, atol=1e-6)
after_one = weights(model)
micro = batches(4, 6, seed=1)
micro[1] = (micro[1][0].clone().fill_(float("nan")), micro[1][1])
skipped += [step(w, y)[1] for w, y in micro]
assert torch.equal(weights(model), after_one)
lr_after_skip = opt.param_groups[0]["lr"]
skipped += [step(w, y)[1] for w, y in batches(4, 6, seed=2)]
print(skipped, lr_after_skip, opt.param_groups[0]["lr"], big_opt.param_groups[0]["lr"])
"""


@pytest.mark.integration
def test_deepspeed_zero0_accumulates_like_one_big_batch_and_skips_nonfinite_steps():
    """DeepSpeed's own accumulation (gradient_accumulation_steps from the recipe; one gloo
    process, ZeRO 0 on CPU): same weights as one batch of 4 x 6, a NaN micro-batch skips its
    whole step without moving the schedule, the next cycle steps."""
    pytest.importorskip("deepspeed")
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    code = DEEPSPEED_RUN.format(here=str(Path(__file__).parent), port=port)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    flags = [False] * 3 + [False] + [False] * 3 + [True] + [False] * 4
    assert last == f"{flags} 0.05 0.025 0.05"
