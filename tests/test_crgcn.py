"""CRGCN: cascade against a per-node reference, residual rows, union-rejection sampler, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baseline_helpers import BEHAVIORS, assert_close_all, grads, nested_dataset

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import make_sampler
from mbrec.graph import normalized_bipartite
from mbrec.models import build_model


def crgcn_reference(model, ds: MultiBehaviorDataset) -> list[torch.Tensor]:
    """Cascade with per-node loops over dense Â_b rows (baselines.md §3.2)."""
    h = torch.cat([model.user_emb, model.item_emb])
    out = []
    for b, mat in enumerate(ds.matrices()):
        a = normalized_bipartite(mat, "symmetric").toarray()
        z = h
        for layer in range(model.config.layers[b]):
            rows = []
            for r in range(a.shape[0]):
                nbrs = np.flatnonzero(a[r])
                msg = (torch.from_numpy(a[r, nbrs]).float().unsqueeze(1) * z[nbrs]).sum(0)
                rows.append(msg + model.biases[b][layer])
            z = torch.stack(rows)
        norm = z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        h = h + z / norm
        out.append(h)
    return out


def test_crgcn_cascade_and_gradients_match_per_node_reference():
    ds = nested_dataset(5)
    torch.manual_seed(1)
    model = build_model("crgcn", ds, {"dim": 4, "layers": [2, 1, 1]})
    with torch.no_grad():
        for bias in model.biases:
            bias.normal_(std=0.1)
    params = list(model.parameters())
    fast, ref = model.cascade_tables(), crgcn_reference(model, ds)
    w = [torch.randn_like(t) for t in fast]
    assert_close_all(fast, ref, rtol=1e-5, atol=1e-6)
    assert_close_all(grads(sum((f * x).sum() for f, x in zip(fast, w, strict=True)), params),
                     grads(sum((f * x).sum() for f, x in zip(ref, w, strict=True)), params),
                     rtol=1e-4, atol=1e-6)


def test_crgcn_each_stage_adds_unit_rows_except_isolated_nodes():
    ds = nested_dataset(6)
    model = build_model("crgcn", ds, {"dim": 8, "layers": [1, 1, 1]})
    with torch.no_grad():
        tables = [torch.cat([model.user_emb, model.item_emb])] + model.cascade_tables()
    for b, mat in enumerate(ds.matrices()):
        degree = np.concatenate([np.diff(mat.indptr), np.diff(mat.tocsc().indptr)])
        norms = (tables[b + 1] - tables[b]).norm(dim=1).numpy()
        np.testing.assert_allclose(norms[degree > 0], 1.0, rtol=1e-5)
        np.testing.assert_array_equal(norms[degree == 0], 0.0)
    assert np.diff(ds.train["view"].indptr)[0] == 0      # user 0 is isolated in view (checked above)


def test_crgcn_sampler_rejects_negatives_against_the_union_of_behaviors():
    ds = nested_dataset(7)
    model = build_model("crgcn", ds, {"dim": 4})
    union = sum(m.toarray() for m in ds.matrices()) > 0
    sampler = make_sampler(model.batch_spec, ds, batch_size=5)
    for batch in sampler.epoch(np.random.default_rng(1)):
        for name, mat in ds.train.items():
            t = batch.triples[name]
            has_items = np.diff(mat.indptr)[batch.users.numpy()] > 0
            assert sorted(t.users.tolist()) == sorted(batch.users.numpy()[has_items].tolist())
            assert mat.toarray()[t.users.numpy(), t.positives.numpy()].all()
            assert not union[t.users.numpy(), t.negatives.numpy()].any()


def test_crgcn_loss_divides_by_batch_users_and_regularises_frobenius_norms():
    ds = nested_dataset(8)
    model = build_model("crgcn", ds, {"dim": 4, "reg": 0.5})
    sampler = make_sampler(model.batch_spec, ds, batch_size=ds.n_users)
    batch = next(sampler.epoch(np.random.default_rng(2)))
    losses = model.losses(batch)
    tables = model.cascade_tables()
    m = ds.n_users
    for name, h in zip(BEHAVIORS, tables, strict=True):
        t = batch.triples[name]
        margin = [(h[u] @ h[m + p] - h[u] @ h[m + n]).item() for u, p, n in
                  zip(t.users.tolist(), t.positives.tolist(), t.negatives.tolist(), strict=True)]
        want = sum(np.log1p(np.exp(-x)) for x in margin) / len(batch.users)
        assert losses[f"bpr/{name}"].item() == pytest.approx(want, rel=1e-5)
    frob = np.linalg.norm(model.user_emb.detach().numpy()) + np.linalg.norm(model.item_emb.detach().numpy())
    assert losses["reg/l2"].item() == pytest.approx(0.5 * frob / ds.n_items, rel=1e-5)
    assert len(batch.triples["view"]) < len(batch.users)   # user 0 has no view: fewer triples than users


def test_baseline_configs_reject_layer_lists_of_the_wrong_length():
    ds = nested_dataset(9)
    for name in ("crgcn", "mbcgcn", "pkef"):
        with pytest.raises(ConfigError, match="one entry per behavior"):
            build_model(name, ds, {"layers": [1, 1]})


# ============================================================================================== MB-CGCN
