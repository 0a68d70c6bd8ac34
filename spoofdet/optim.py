"""Sharpness-aware minimisation (SAM, Foret et al. 2021) as Codecfake's CSAM uses it (rho = 0.05).

One step: gradient g at w; ascend to w + e with e = rho * g / ||g||_2 (one norm over all
parameters); gradient there; restore w; let the optimizer step with that second gradient. CSAM is
this step on batches that hold every training domain in proportion to its size
(``data.proportional_batches``, :func:`spoofdet.data.iter_train_batches`).

BatchNorm: the perturbed pass normalises with its batch statistics as usual but must not move
the running statistics (they would then count every batch twice, once at a point the model never
takes). It runs with ``track_running_stats`` off, which leaves ``running_mean``, ``running_var``
and ``num_batches_tracked`` untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def sam_step(
    module: nn.Module,
    compute_loss: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    rho: float,
    grad_clip: float | None = None,
) -> Tensor:
    """One SAM update of ``module``'s parameters; returns the loss at the unperturbed weights.

    Args:
        module: the model whose parameters ``optimizer`` holds (the unwrapped module when
            ``compute_loss`` runs a DDP wrapper around it: the same parameters).
        compute_loss: runs the forward pass on the step's batch and returns the scalar loss.
        optimizer: any torch optimizer; its gradients are zeroed before and after.
        rho: neighbourhood radius (> 0).
        grad_clip: clip the SAM gradient's norm to this before the step (None: no clipping).

    Raises:
        ValueError: for ``rho`` <= 0.
    """
    if rho <= 0:
        raise ValueError(f"optim.sam_rho: SAM needs rho > 0, got {rho}")
    optimizer.zero_grad()
    loss = compute_loss()
    loss.backward()
    params = [p for p in module.parameters() if p.grad is not None]
    norm = torch.norm(torch.stack([p.grad.detach().norm(2) for p in params]), 2) + 1e-12
    eps = [rho * p.grad.detach() / norm for p in params]
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.add_(e)
    bns = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    optimizer.zero_grad()
    try:
        for m in bns:
            m.track_running_stats = (
                False  # batch statistics, no running-stat update (see the module docstring)
            )
        compute_loss().backward()
    finally:
        for m in bns:
            m.track_running_stats = True
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.sub_(e)
    if grad_clip:
        nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()
