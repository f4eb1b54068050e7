"""Every model on a GPU computes what it computes on the CPU (skipped where CUDA is not available).

For each ``configs/*_synthetic.yaml`` the model is built on the CPU and on the other device with the same
weights (``load_state_dict``) and compared in eval mode on one batch drawn once by the model's sampler:
scores of all items for all users, every named loss, and the gradient of their sum for every parameter.
Then two epochs of the real trainer run on the device and must give finite losses and metrics.

Both sides seed torch alike before the losses: draws from the CPU generator (MBSSL's augmented views) are
then the same on both, and a draw from the device's own generator would show as a difference.
``MBREC_TEST_DEVICE`` names the device (default ``cuda``; ``cpu`` exercises the test itself without a GPU).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrec.config import load_run_config
from mbrec.data.registry import load_dataset
from mbrec.data.samplers import make_sampler
from mbrec.eval import evaluate
from mbrec.models import build_model
from mbrec.train.runner import run_training

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*_synthetic.yaml"))
DEVICE = os.environ.get("MBREC_TEST_DEVICE", "cuda")

pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic")


def _pair(cfg, dataset):
    """The model on the CPU and a copy with the same weights on ``DEVICE``, both in eval mode."""
    torch.manual_seed(0)
    cpu = build_model(cfg.model, dataset, cfg.params, device="cpu", skip_warm_start=True)
    other = build_model(cfg.model, dataset, cfg.params, device=DEVICE, skip_warm_start=True)
    other.load_state_dict(cpu.state_dict())
    return cpu.eval(), other.eval()


def _atol(reference: torch.Tensor, fraction: float) -> float:
    """An absolute tolerance that scales with the tensor (float32 sums run in another order on the device)."""
    return fraction * max(float(reference.abs().max()), 1e-6)


def _losses_and_grads(model, batch, seed):
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    losses = model.losses(batch.to(model.device_))
    sum(losses.values()).backward()
    grads = {name: p.grad.detach().cpu() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach().cpu() for k, v in losses.items()}, grads


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name.removesuffix("_synthetic.yaml") for c in CONFIGS])
def test_device_matches_cpu(config, synthetic):
    cfg = load_run_config(config, [])
    cpu, other = _pair(cfg, synthetic)
    users = torch.arange(synthetic.n_users)
    with torch.no_grad():
        want = cpu.score_users(users)
        torch.testing.assert_close(other.score_users(users.to(other.device_)).cpu(), want,
                                   rtol=1e-4, atol=_atol(want, 1e-5))
    batch = next(iter(make_sampler(cpu.batch_spec, synthetic, 64).epoch(np.random.default_rng(3))))
    cpu_losses, cpu_grads = _losses_and_grads(cpu, batch, seed=1)
    other_losses, other_grads = _losses_and_grads(other, batch, seed=1)
    assert cpu_losses.keys() == other_losses.keys()
    for name, value in cpu_losses.items():
        torch.testing.assert_close(other_losses[name], value, rtol=1e-4, atol=1e-5, msg=f"loss {name}")
    assert cpu_grads.keys() == other_grads.keys() and cpu_grads
    for name, grad in cpu_grads.items():
        torch.testing.assert_close(other_grads[name], grad, rtol=1e-3, atol=_atol(grad, 1e-4),
                                   msg=f"gradient of {name}")
    ranked_cpu = evaluate(cpu, synthetic, ks=[10], device="cpu").metrics
    ranked_other = evaluate(other, synthetic, ks=[10], device=DEVICE).metrics
    assert ranked_other == pytest.approx(ranked_cpu, abs=0.01)   # a near-tie may order differently: 1/600 each


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name.removesuffix("_synthetic.yaml") for c in CONFIGS])
def test_trainer_runs_on_device(config, tmp_path):
    cfg = load_run_config(config, [f"train.device={DEVICE}", "train.epochs=2", "train.eval_every=1",
                                   "train.progress=false", f"output_dir={tmp_path}"])
    record = run_training(cfg)
    assert record["device"].startswith("cuda") == (DEVICE == "cuda")
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for entry in record["history"]:
        assert all(math.isfinite(v) for v in entry["loss"].values())
        assert 0.0 <= entry["test"]["HR@10"] <= 1.0
