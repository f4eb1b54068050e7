"""The registered ``mbssl`` model: losses against plain references, switches, determinism, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.config import ConfigError, TrainConfig, from_dict, load_run_config
from mbrec.data.dataset import binary_csr
from mbrec.data.samplers import make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.eval import evaluate
from mbrec.losses.nonsampling import nonsampling_loss_reference
from mbrec.models import build_model, model_class
from mbrec.models.mbssl import MBSSL, LabelLists
from mbrec.train.trainer import Trainer

SMALL = {"dim": 8, "layers": 2, "attention_dim": 4, "rec_weights": [0.2, 0.5, 0.3], "label_quantile": 0.95}
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Swing cache in a temporary folder."""
    monkeypatch.setenv("MBREC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(60, 50, mean_views=12.0, seed=0)


def first_batch(model, ds, size=16):
    return next(iter(make_sampler(model.batch_spec, ds, size).epoch(np.random.default_rng(0))))


def build(ds, **params):
    torch.manual_seed(0)
    return build_model("mbssl", ds, {**SMALL, **params})


def infonce(anchor, candidates, positive, tau, false_negatives=(), similarity="cosine"):
    """ℓ for one anchor row with zeroed false-negative logits (released form), plain torch; φ = cosine
    (released) or the raw inner product (paper)."""
    if similarity == "cosine":
        logits = torch.nn.functional.cosine_similarity(anchor.unsqueeze(0), candidates, dim=1) / tau
    else:
        logits = candidates @ anchor / tau
    logits = logits.clone()
    for fn in false_negatives:
        logits[fn] = 0.0
    return torch.logsumexp(logits, 0) - logits[positive]


def test_label_lists_cap():
    lengths = np.arange(1, 11)                                    # users 0..9 have 1..10 items
    rows = np.repeat(np.arange(10), lengths)
    cols = np.concatenate([np.arange(n) for n in lengths])
    mat = binary_csr(rows, cols, (11, 12))                        # user 10 has no list
    assert LabelLists.build(mat, 0.85).cap == 8                   # rank ⌊8.5⌋ = 8 of the sorted lengths
    assert LabelLists.build(mat, 0.9999).cap == 9
    lists = LabelLists.build(mat, 0.85)
    rows_out, items = lists.pairs(np.array([9, 2, 10]))
    assert rows_out.tolist() == [0] * 8 + [1] * 3
    assert items.tolist() == list(range(8)) + [0, 1, 2]           # first M_k items, in stored order


def test_loss_names_and_switches(dataset):
    model = build(dataset)
    batch = first_batch(model, dataset)
    assert set(model.losses(batch)) == {"rec", "aux/intra", "aux/inter/view", "aux/inter/cart", "reg/l2"}
    assert set(build(dataset, use_intra=False).losses(batch)) == {"rec", "aux/inter/view", "aux/inter/cart",
                                                                  "reg/l2"}
    assert set(build(dataset, use_inter=False).losses(batch)) == {"rec", "aux/intra", "reg/l2"}
    assert set(build(dataset, aux_behaviors=["cart"]).losses(batch)) == {"rec", "aux/intra",
                                                                         "aux/inter/cart", "reg/l2"}
    assert build(dataset, fn_mode="none").user_false_negatives is None


def test_rec_and_reg_equal_brute_force(dataset):
    model = build(dataset, neg_weights=[0.1, 0.2, 0.3]).eval()     # eval: no dropout, same tables
    batch = first_batch(model, dataset)
    losses = model.losses(batch)
    out = model.encode(with_views=False)
    table, h, m = out.nodes[0], out.behaviors, dataset.n_users
    users = batch.users
    expected = 0.0
    for k, (lam, w) in enumerate(zip([0.2, 0.5, 0.3], [0.1, 0.2, 0.3], strict=True)):
        rows, items = model.labels[k].pairs(users.numpy())
        expected = expected + lam * nonsampling_loss_reference(
            table[users, k], table[m:, k], h[k], torch.from_numpy(rows), torch.from_numpy(items), w)
    torch.testing.assert_close(losses["rec"], expected, rtol=1e-4, atol=1e-4)
    reg = 10.0 * 0.5 * (table[users].pow(2).sum() + table[m:].pow(2).sum())
    torch.testing.assert_close(losses["reg/l2"], reg)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_ssl_losses_equal_repeated_anchor_reference(dataset, similarity):
    model = build(dataset, fn_users=3, fn_items=3, tau=0.3, similarity=similarity).eval()
    batch = first_batch(model, dataset)
    losses = model.losses(batch)
    out = model.encode(with_views=True)
    main, view1, view2 = out.nodes
    m, t = dataset.n_users, 2
    user_fn, item_fn = model.user_false_negatives, model.item_false_negatives
    assert user_fn.counts().sum() > 0 and item_fn.counts().sum() > 0
    pad = torch.zeros(1, 8)
    rows, items = model.labels[t].pairs(batch.users.numpy())
    pairs = list(zip(batch.users[rows].tolist(), items.tolist(), strict=True))   # one per purchase
    for k, name in ((0, "view"), (1, "cart")):
        expected = 0.0
        for u, i in pairs:
            expected += infonce(main[u, t], main[:m, k], u, 0.3,
                                user_fn.indices[user_fn.indptr[u]:user_fn.indptr[u + 1]], similarity)
            expected += infonce(main[m + i, t], torch.cat([main[m:, k], pad]), i, 0.3,
                                item_fn.indices[item_fn.indptr[i]:item_fn.indptr[i + 1]], similarity)
        torch.testing.assert_close(losses[f"aux/inter/{name}"], expected, rtol=1e-4, atol=1e-3)
    expected = 0.0
    for u, i in pairs:
        expected += infonce(view1[u, t], view2[:m, t], u, 0.3, similarity=similarity)
        expected += infonce(view1[m + i, t], torch.cat([view2[m:, t], pad]), i, 0.3, similarity=similarity)
    torch.testing.assert_close(losses["aux/intra"], expected, rtol=1e-4, atol=1e-3)


def test_ssl_anchors_nodes_counts_every_node_once(dataset):
    """ssl_anchors="nodes" (the paper's sums over nodes): each batch buyer and each bought item once."""
    model = build(dataset, fn_users=3, fn_items=3, tau=0.3, ssl_anchors="nodes").eval()
    batch = first_batch(model, dataset)
    losses = model.losses(batch)
    main, view1, view2 = model.encode(with_views=True).nodes
    m, t = dataset.n_users, 2
    user_fn, item_fn = model.user_false_negatives, model.item_false_negatives
    pad = torch.zeros(1, 8)
    rows, items = model.labels[t].pairs(batch.users.numpy())
    users, items = np.unique(batch.users[rows].numpy()), np.unique(items)
    assert len(users) + len(items) < len(rows) * 2                               # some nodes repeat in pairs
    expected = 0.0
    for u in users:
        expected += infonce(main[u, t], main[:m, 1], u, 0.3, user_fn.indices[user_fn.indptr[u]:user_fn.indptr[u + 1]])
    for i in items:
        expected += infonce(main[m + i, t], torch.cat([main[m:, 1], pad]), i, 0.3,
                            item_fn.indices[item_fn.indptr[i]:item_fn.indptr[i + 1]])
    torch.testing.assert_close(losses["aux/inter/cart"], expected, rtol=1e-4, atol=1e-3)
    expected = sum(infonce(view1[u, t], view2[:m, t], u, 0.3) for u in users) + sum(
        infonce(view1[m + i, t], torch.cat([view2[m:, t], pad]), i, 0.3) for i in items)
    torch.testing.assert_close(losses["aux/intra"], expected, rtol=1e-4, atol=1e-3)


def test_gradient_paths(dataset):
    model = build(dataset)
    losses = model.losses(first_batch(model, dataset))
    last_relation = model.encoder.relation_weights[-1]             # r^(L) only enters h (rec loss)
    (from_ssl,) = torch.autograd.grad(losses["aux/inter/view"], [last_relation], retain_graph=True,
                                      allow_unused=True)
    (from_rec,) = torch.autograd.grad(losses["rec"], [last_relation], retain_graph=True)
    assert (from_ssl is None or not from_ssl.any()) and from_rec.abs().sum() > 0
    grads = torch.autograd.grad(losses["aux/intra"], [model.encoder.attention_proj, model.encoder.user_emb])
    assert all(g.abs().sum() > 0 for g in grads)
    plain = build(dataset, cdm=False)
    loss = sum(plain.losses(first_batch(plain, dataset)).values())
    (attention,) = torch.autograd.grad(loss, [plain.encoder.attention_proj], allow_unused=True)
    assert attention is None                                       # w/o CDM: the attention is unused


def test_same_seed_same_first_batch_losses(dataset):
    def run(seed):
        torch.manual_seed(seed)
        model = build_model("mbssl", dataset, SMALL)
        model.train()
        model.prepare_epoch(0)
        return {k: v.item() for k, v in model.losses(first_batch(model, dataset)).items()}

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_score_users_and_cache(dataset):
    model = build(dataset).eval()
    users = torch.tensor([0, 5, 9])
    scores = model.score_users(users)
    out = model.encode(with_views=False)
    table, h, m = out.nodes[0], out.behaviors, dataset.n_users
    torch.testing.assert_close(scores, (table[users, 2] * h[2]) @ table[m:, 2].T)
    with torch.no_grad():
        model.encoder.item_emb.add_(1.0)
    torch.testing.assert_close(model.score_users(users), scores)   # cached within one evaluation
    model.train()
    model.eval()
    assert not torch.allclose(model.score_users(users), scores)   # invalidated by the mode switch


def test_config_errors(dataset):
    with pytest.raises(ConfigError, match="rec_weights"):
        build(dataset, rec_weights=[0.5, 0.5])
    with pytest.raises(ConfigError, match="aux_behaviors"):
        build(dataset, aux_behaviors=["buy"])
    with pytest.raises(ConfigError, match="tau"):
        build(dataset, tau=0.0)
    with pytest.raises(ConfigError, match="unknown key"):
        build(dataset, temperature=0.2)


@pytest.mark.parametrize("name", ["mbssl_beibei", "mbssl_taobao", "mbssl_synthetic"])
def test_config_files_validate(name):
    cfg = load_run_config(CONFIGS / f"{name}.yaml")
    assert cfg.model == "mbssl"
    params = from_dict(model_class("mbssl").Config, cfg.params)
    assert params.layers >= 2 and cfg.train.hmg.strategy == "mbssl"


def test_short_run_beats_random(tmp_path):
    ds = make_synthetic(200, 150, mean_views=15.0, seed=1)
    torch.manual_seed(0)
    model = build_model("mbssl", ds, {"dim": 16, "layers": 2, "attention_dim": 4, "reg": 0.01, "tau": 0.2,
                                      "rec_weights": [1 / 6, 4 / 6, 1 / 6], "dropout": 0.1})
    assert isinstance(model, MBSSL)
    cfg = TrainConfig(epochs=20, batch_size=32, lr=2e-2, eval_every=20, protocol="paper", progress=False,
                      seed=0)
    Trainer(model, ds, cfg, tmp_path, log=lambda msg: None).fit()
    hr = evaluate(model, ds, ks=[10]).metrics["HR@10"]
    random_hr = 10 / (ds.n_items - np.diff(ds.target_train.indptr).mean())
    assert hr > 4 * random_hr, (hr, random_hr)                       # about 0.8 vs 0.067


def test_mean_similarity_uses_every_graph(dataset):
    target_only = build(dataset, sim_behaviors="target", fn_users=3)
    mean = build(dataset, sim_behaviors="mean", fn_users=3)
    assert not np.array_equal(target_only.user_false_negatives.indices, mean.user_false_negatives.indices)
    assert isinstance(dataset.target_train, sp.csr_matrix)
