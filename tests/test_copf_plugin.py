"""``dfme``: DFME as the prediction module of another model (COPF Table 6), through the model contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mbrec.config import ConfigError, TrainConfig, from_dict, load_run_config
from mbrec.data.samplers import make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.eval import evaluate
from mbrec.models import build_model
from mbrec.models.copf import DFMEPluginConfig, backbones_with_tables
from mbrec.train.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BACKBONES = {"crgcn": {"layers": [2, 1, 1]}, "mbcgcn": {"layers": [1, 2, 1], "init_std": 0.1},
             "pkef": {"layers": [2, 1, 1]}, "lightgcn_m": {"layers": 2}}


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(60, 50, seed=0, mean_views=12.0)


def first_batch(model, ds, seed: int = 0):
    return next(make_sampler(model.batch_spec, ds, 24).epoch(np.random.default_rng(seed)))


def grads(loss, params):
    out = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(out, params, strict=True)]


def test_dfme_on_lightgcn_m_is_the_lightgcn_m_dfme_model(ds):
    """Same weights, same batch: every loss, every gradient and the scores equal the dedicated model's."""
    torch.manual_seed(0)
    plain = build_model("lightgcn_m_dfme", ds, {"dim": 8, "layers": 2, "stop_grad": "paper", "fit_layers": [2, 1, 1]})
    plugin = build_model("dfme", ds, {"dim": 8, "backbone": "lightgcn_m", "backbone_params": {"layers": 2},
                                      "stop_grad": "paper", "fit_layers": [2, 1, 1]})
    with torch.no_grad():
        plugin.backbone.user_emb.copy_(plain.user_emb)
        plugin.backbone.item_emb.copy_(plain.item_emb)
        for mine, theirs in zip(plugin.head.parameters(), plain.head.parameters(), strict=True):
            mine.copy_(theirs)
    batch = first_batch(plain, ds)
    want, got = plain.losses(batch), plugin.losses(batch)
    assert sorted(got) == sorted(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6)
    plain_params = [plain.user_emb, plain.item_emb, *plain.head.parameters()]
    plugin_params = [plugin.backbone.user_emb, plugin.backbone.item_emb, *plugin.head.parameters()]
    for name in want:
        for g, h in zip(grads(got[name], plugin_params), grads(want[name], plain_params), strict=True):
            torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-6)
    plain.eval()
    plugin.eval()
    users = torch.arange(5)
    torch.testing.assert_close(plugin.score_users(users), plain.score_users(users), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backbone", ["crgcn", "mbcgcn", "pkef"])
def test_dfme_trains_the_backbones_tables(ds, backbone):
    torch.manual_seed(1)
    model = build_model("dfme", ds, {"dim": 8, "backbone": backbone, "backbone_params": BACKBONES[backbone]})
    tables = model.encode()
    for (users, items), (want_users, want_items) in zip(tables, model.backbone.behavior_tables(), strict=True):
        assert users.shape == (ds.n_users, 8) and items.shape == (ds.n_items, 8)
        torch.testing.assert_close(users, want_users)
        torch.testing.assert_close(items, want_items)
    losses = model.losses(first_batch(model, ds))
    assert sorted(losses) == ["aux/cl/cart", "aux/cl/view", "bpr/buy", "bpr/cart", "bpr/view", "reg/l2"]
    # the BPR of the target task reaches the backbone's ego tables and its own weights
    named = dict(model.backbone.named_parameters())
    reached = {name for name, g in zip(named, grads(losses["bpr/buy"], list(named.values())), strict=True)
               if g.abs().sum() > 0}
    assert {"user_emb", "item_emb"} <= reached
    if backbone == "mbcgcn":
        assert {"user_transforms", "item_transforms"} <= reached
    if backbone == "crgcn":
        assert "biases.0" in reached
    if backbone == "pkef":                      # its PME head is not used: no task gradient, only L2
        assert not any(name.startswith("head.") for name in reached)
    # L2: every backbone parameter, plus DFME's gate and layer weights (not R, not the gate bias)
    weights = [*model.backbone.parameters(), model.head.gate_weight, *model.head.layer_weights]
    want_l2 = model.config.reg * sum(w.pow(2).sum() for w in weights)
    torch.testing.assert_close(losses["reg/l2"], want_l2)
    model.eval()
    scores = model.score_users(torch.arange(4))
    assert scores.shape == (4, ds.n_items) and torch.isfinite(scores).all()


@pytest.mark.parametrize("backbone_reg", [0.0, 0.25])
def test_backbone_reg_weighs_the_backbone_apart(ds, backbone_reg):
    """μ_b Σ‖backbone‖² + μ Σ‖head W‖²; with μ_b = 0 no L2 gradient reaches the backbone, the head's stays."""
    torch.manual_seed(2)
    params = {"dim": 8, "backbone": "crgcn", "backbone_params": BACKBONES["crgcn"], "reg": 0.01}
    model = build_model("dfme", ds, {**params, "backbone_reg": backbone_reg})
    head_weights = [model.head.gate_weight, *model.head.layer_weights]
    backbone = list(model.backbone.parameters())
    l2 = model.losses(first_batch(model, ds))["reg/l2"]
    want = 0.01 * sum(w.pow(2).sum() for w in head_weights) + backbone_reg * sum(w.pow(2).sum() for w in backbone)
    torch.testing.assert_close(l2, want)
    backbone_grads = grads(l2, backbone)
    if backbone_reg == 0:
        assert all(g.abs().sum() == 0 for g in backbone_grads)
    else:
        torch.testing.assert_close(backbone_grads[0], 2 * backbone_reg * backbone[0].detach())
    torch.testing.assert_close(grads(l2, [model.head.gate_weight])[0], 0.02 * model.head.gate_weight.detach())
    with pytest.raises(ConfigError, match="params.backbone_reg must be >= 0"):
        build_model("dfme", ds, {**params, "backbone_reg": -1.0})


def test_backbone_choice_is_validated(ds):
    assert set(BACKBONES) <= set(backbones_with_tables())
    assert not {"mf", "copf", "dfme", "lightgcn_m_dfme"} & set(backbones_with_tables())
    cases = {
        "mf": "params.backbone: model 'mf' gives no per-behavior tables",
        "copf": "params.backbone: model 'copf' gives no per-behavior tables",
        "nope": "params.backbone: unknown model 'nope'",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            build_model("dfme", ds, {"backbone": name})
    with pytest.raises(ConfigError, match="params.backbone_params.dim=4 differs from params.dim=8"):
        build_model("dfme", ds, {"dim": 8, "backbone": "crgcn", "backbone_params": {"dim": 4}})
    with pytest.raises(ConfigError, match=r"^params.backbone_params.layers needs one entry per behavior"):
        build_model("dfme", ds, {"backbone": "crgcn", "backbone_params": {"layers": [1, 1]}})
    with pytest.raises(ConfigError, match="unknown key params.backbone_params.depth"):
        build_model("dfme", ds, {"backbone": "crgcn", "backbone_params": {"depth": 2}})


def test_skip_warm_start_reaches_the_backbone(ds, monkeypatch):
    calls = []
    import mbrec.models.mbcgcn as mbcgcn

    real = mbcgcn.pretrained_lightgcn_tables
    monkeypatch.setattr(mbcgcn, "pretrained_lightgcn_tables", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = {"dim": 8, "backbone": "mbcgcn", "backbone_params": {"pretrain_epochs": 1}}
    resumed = build_model("dfme", ds, params, skip_warm_start=True)
    assert calls == [] and resumed.backbone.config.pretrain_epochs == 0
    build_model("dfme", ds, params)
    assert calls == [1]


def test_short_run_on_crgcn_beats_random_and_the_untrained_ranking(tmp_path):
    data = make_synthetic(150, 100, seed=0, mean_views=20.0)
    torch.manual_seed(0)
    model = build_model("dfme", data, {"dim": 16, "mult": 3.0, "backbone": "crgcn"})
    before = evaluate(model, data, ks=[10]).metrics
    cfg = TrainConfig(epochs=15, lr=0.01, batch_size=64, eval_every=15, protocol="paper", progress=False)
    Trainer(model, data, cfg, tmp_path, log=lambda m: None).fit()
    after = evaluate(model, data, ks=[10]).metrics
    assert after["HR@10"] > 3 * 10 / data.n_items
    assert after["MRR"] > 1.15 * before["MRR"]


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*_dfme_*.yaml") if not p.name.startswith("lightgcn")),
                         ids=lambda p: p.name)
def test_dfme_configs_are_copf_settings_on_the_backbones_release_settings(path):
    cfg = load_run_config(path)
    assert cfg.model == "dfme"
    from_dict(DFMEPluginConfig, cfg.params, "params")                   # validates the backbone too
    params = dict(cfg.params)
    backbone, backbone_params = params.pop("backbone"), params.pop("backbone_params")
    own = load_run_config(CONFIGS / f"{backbone}_{cfg.dataset}.yaml")
    assert own.model == backbone
    assert backbone_params == {k: own.params[k] for k in backbone_params}
    copf = load_run_config(CONFIGS / f"copf_{cfg.dataset}.yaml")
    assert params == {k: v for k, v in copf.params.items() if k != "cogcn_layers"}
    assert cfg.train == copf.train
