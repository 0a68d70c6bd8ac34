"""CSAM pieces without Ray: exact proportional batch composition and the SAM step (BatchNorm included)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from spoofdet.config import ConfigError, load_train_config
from spoofdet.data import DataError
from spoofdet.data.sampling import batch_compositions, iter_proportional
from spoofdet.optim import sam_step

torch.set_num_threads(1)


def take(gen, n):
    return [next(gen) for _ in range(n)]


def test_compositions_are_exact_for_shares_on_the_batch_grid():
    assert take(batch_compositions([3, 1], 8), 5) == [[6, 2]] * 5
    assert take(batch_compositions([0.5, 0.25, 0.25], 4), 3) == [[2, 1, 1]] * 3


@pytest.mark.parametrize(
    "shares,batch", [([740_747, 25_380], 14), ([0.61, 0.3, 0.09], 7), ([1, 1, 1], 4)]
)
def test_compositions_track_the_shares_within_one_row(shares, batch):
    w = np.asarray(shares, float) / sum(shares)
    running = np.zeros(len(shares))
    for k, counts in enumerate(take(batch_compositions(shares, batch), 300), start=1):
        assert sum(counts) == batch and min(counts) >= 0
        running += counts
        assert np.all(np.abs(running - k * batch * w) < 1.0 + 1e-9), (k, running, k * batch * w)
    small = [c[1] for c in take(batch_compositions([740_747, 25_380], 14), 100)]
    assert set(small) <= {0, 1} and sum(small) in (
        46,
        47,
    )  # 3.31 % of 1400 slots = 46.4, spread out, not in bursts


def test_compositions_refuse_bad_shares():
    with pytest.raises(DataError, match="shares"):
        next(batch_compositions([0, 0], 4))
    with pytest.raises(DataError, match="batch_size"):
        next(batch_compositions([1], 0))


def stream(source: int, n: int, chunk: int):
    ids = np.arange(n)
    for i in range(0, n, chunk):
        part = ids[i : i + chunk]
        yield {
            "utt_id": np.asarray([f"s{source}-{j}" for j in part], dtype=object),
            "label": np.full(len(part), source, dtype=np.int64),
            "wave": np.full((len(part), 3), source, dtype=np.float32),
        }


def test_iter_proportional_composes_every_batch_exactly_and_stops_when_a_source_runs_out():
    shares, batch = [30, 10], 4
    batches = list(iter_proportional([stream(0, 30, 7), stream(1, 10, 3)], shares, batch))
    expected = take(batch_compositions(shares, batch), len(batches))
    assert len(batches) == 10  # 40 rows / 4, all used
    for b, counts in zip(batches, expected):
        assert [int((b["label"] == s).sum()) for s in (0, 1)] == counts
        assert b["wave"].shape == (batch, 3)
    ids = np.concatenate([b["utt_id"] for b in batches])
    assert len(set(ids)) == 40  # every row once, none repeated
    short = list(iter_proportional([stream(0, 30, 7), stream(1, 5, 3)], shares, batch))
    assert len(short) == 5  # source 1 holds 5 rows: its quota of batch 6 cannot be filled


# ----------------------------------------------------------------------------- SAM


class LinearBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, generator=g), torch.randint(0, 2, (8,), generator=g)


def test_sam_step_equals_a_hand_written_sam_step_and_updates_bn_stats_once():
    torch.manual_seed(0)
    model = LinearBN()
    hand = copy.deepcopy(model)
    x, y = data()
    rho, lr = 0.05, 0.1
    loss_of = nn.functional.cross_entropy

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = sam_step(model, lambda: loss_of(model(x), y), opt, rho=rho)

    # by hand: g at w (this pass updates the BN running stats), e = rho g/||g||, g' at w+e with the
    # running stats left alone, w <- w - lr g'
    params = list(hand.parameters())
    ref_loss = loss_of(hand(x), y)
    grads = torch.autograd.grad(ref_loss, params)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    stats = (
        hand.bn.running_mean.clone(),
        hand.bn.running_var.clone(),
        hand.bn.num_batches_tracked.clone(),
    )
    perturbed = copy.deepcopy(hand)
    with torch.no_grad():
        for p, g in zip(perturbed.parameters(), grads):
            p.add_(rho * g / norm)
    h = perturbed.fc(x)
    h = (h - h.mean(0)) / torch.sqrt(
        h.var(0, unbiased=False) + perturbed.bn.eps
    ) * perturbed.bn.weight + perturbed.bn.bias
    grads2 = torch.autograd.grad(
        loss_of(perturbed.out(torch.relu(h)), y), list(perturbed.parameters())
    )
    with torch.no_grad():
        for p, g in zip(params, grads2):
            p.sub_(lr * g)

    assert torch.allclose(loss, ref_loss.detach())
    for (name, a), b in zip(model.named_parameters(), hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert torch.equal(model.bn.running_mean, stats[0]) and torch.equal(
        model.bn.running_var, stats[1]
    )
    assert int(model.bn.num_batches_tracked) == int(stats[2]) == 1
    assert model.bn.track_running_stats  # restored


def test_sam_second_pass_leaves_bn_running_stats_unchanged():
    torch.manual_seed(1)
    model = LinearBN()
    x, y = data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen = []

    def loss_fn():
        before = (
            model.bn.running_mean.clone(),
            model.bn.running_var.clone(),
            int(model.bn.num_batches_tracked),
        )
        out = nn.functional.cross_entropy(model(x), y)
        after = (
            model.bn.running_mean.clone(),
            model.bn.running_var.clone(),
            int(model.bn.num_batches_tracked),
        )
        seen.append(
            all(torch.equal(a, b) if torch.is_tensor(a) else a == b for a, b in zip(before, after))
        )
        return out

    sam_step(model, loss_fn, opt, rho=0.05)
    assert seen == [False, True]  # the first pass updates the stats, the perturbed pass does not
    with pytest.raises(ValueError, match="sam_rho"):
        sam_step(model, loss_fn, opt, rho=0.0)


def test_config_takes_proportional_batches_and_keeps_sam_off_deepspeed(tmp_path):
    from pathlib import Path

    demo = (
        Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "cotrain_codecfake_19la.yaml"
    )
    cfg = load_train_config(
        demo,
        ["data.proportional_batches=true", "optim.sam_rho=0.05", "deepspeed.enabled=false"],
        check_paths=False,
    )
    assert cfg.data.proportional_batches and cfg.optim.sam_rho == 0.05
    with pytest.raises(ConfigError) as err:
        load_train_config(
            demo, ["data.proportional_batches=maybe", "optim.sam_rho=0.05"], check_paths=False
        )
    text = str(err.value)
    assert (
        "data.proportional_batches: expected true/false" in text
        and "optim.sam_rho: SAM needs" in text
    )
