"""HMG (MBSSL gradient manipulation): the per-tensor rules, EMA bookkeeping, state, and the trainer hook."""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from mbrec.config import ConfigError, HMGConfig, TrainConfig
from mbrec.data.samplers import Batch, BPRSpec, make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.losses import bpr_loss, l2_of_rows
from mbrec.models import Recommender, available_models, build_model
from mbrec.train.gradients import SumCombiner, make_combiner
from mbrec.train.hmg import HMG, combine_gradients
from mbrec.train.seeding import seed_everything
from mbrec.train.trainer import Trainer

R = 0.7


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- single tensor
def test_projection_removes_the_conflicting_component():
    gen = torch.Generator().manual_seed(0)
    g0 = torch.randn(50, generator=gen, dtype=torch.float64)
    g = -2.0 * g0 + torch.randn(50, generator=gen, dtype=torch.float64)
    projected = g - (g @ g0) / (g0 @ g0) * g0
    out_a = combine_gradients(g0, [g], 1.0, [5.0], "A", R)
    torch.testing.assert_close(out_a, g0 + projected)
    assert abs(float((out_a - g0) @ g0)) < 1e-10                  # ⟂ g0
    scale = R * 1.0 / 5.0 + (1 - R)                               # mbssl: n̄t = 5 > n̄0 = 1 -> project, scale
    out = combine_gradients(g0, [g], 1.0, [5.0], "mbssl", R)
    torch.testing.assert_close(out, g0 + scale * projected)
    assert abs(float((out - g0) @ g0)) < 1e-10


def test_hand_computed_projection_and_scaling():
    # g0 = (3, 4), g = (-30, 0): <g, g0> = -90, g - (-90/25) g0 = (-19.2, 14.4); scale 0.7*0.5/3 + 0.3
    out = combine_gradients(t(3, 4), [t(-30, 0)], 0.5, [3.0], "mbssl", R)
    torch.testing.assert_close(out, t(3, 4) + t(-8.0, 6.0))


def test_rescaling_sets_the_specified_norm():
    g0, g = t(3, 0), t(0, 4)                                      # orthogonal: nothing to project
    out = combine_gradients(g0, [g], 3.0, [4.0], "B", 1.0)        # r = 1: aux norm becomes n̄0 ‖g‖ / n̄t
    assert float(torch.linalg.vector_norm(out - g0)) == pytest.approx(3.0)
    out = combine_gradients(g0, [g], 3.0, [4.0], "B", R)          # (0.7 * 3/4 + 0.3) * 4 = 3.3
    torch.testing.assert_close(out, t(3, 3.3))


@pytest.mark.parametrize("aux_norm", [1.0, 2.0])                  # below and equal to n̄0 = 2
def test_mbssl_leaves_aux_gradients_alone_when_their_moving_norm_is_not_larger(aux_norm):
    g0, g = t(1, 0), t(-100, 3)                                   # large and conflicting
    out = combine_gradients(g0, [g], 2.0, [aux_norm], "mbssl", R)
    torch.testing.assert_close(out, g0 + g, rtol=0, atol=0)


@pytest.mark.parametrize("g", [t(0, 5), t(2, 5)])               # dot = 0 and dot > 0
def test_no_projection_without_conflict(g):
    g0 = t(1, 0)
    torch.testing.assert_close(combine_gradients(g0, [g], 1.0, [9.0], "A", R), g0 + g, rtol=0, atol=0)
    scale = R / 9.0 + (1 - R)
    torch.testing.assert_close(combine_gradients(g0, [g], 1.0, [9.0], "mbssl", R), g0 + scale * g)


def test_strategies_a_b_c_on_a_small_conflicting_aux_gradient():
    g0, g = t(4, 0), t(-1, 1)                                     # n̄0 = 4 > n̄t = 1, conflict
    projected = t(0, 1)
    raise_factor = R * 4.0 + (1 - R)                              # 3.1: B/C raise small aux gradients
    torch.testing.assert_close(combine_gradients(g0, [g], 4.0, [1.0], "A", R), g0 + projected)
    torch.testing.assert_close(combine_gradients(g0, [g], 4.0, [1.0], "B", R), g0 + raise_factor * g)
    torch.testing.assert_close(combine_gradients(g0, [g], 4.0, [1.0], "C", R), g0 + raise_factor * projected)
    torch.testing.assert_close(combine_gradients(g0, [g], 4.0, [1.0], "mbssl", R), g0 + g)


def test_a_does_not_scale_large_aux_gradients():
    g0, g = t(1, 0), t(50, 50)
    torch.testing.assert_close(combine_gradients(g0, [g], 1.0, [70.0], "A", R), g0 + g)


def test_each_aux_task_is_handled_on_its_own():
    g0, big, small = t(1, 0), t(-10, 3), t(-0.1, 0.1)
    out = combine_gradients(g0, [big, small], 1.0, [10.0, 0.2], "mbssl", R)
    torch.testing.assert_close(out, g0 + (R / 10.0 + (1 - R)) * t(0, 3) + small)


def test_zero_norm_edge_cases_stay_finite():
    zero, g = t(0, 0), t(-3, 4)
    for strategy in ("mbssl", "A", "C"):                          # g0 = 0: no projection possible
        out = combine_gradients(zero, [g], 0.0, [0.5], strategy, R)
        assert torch.isfinite(out).all()
    torch.testing.assert_close(combine_gradients(zero, [g], 0.0, [0.5], "A", R), g)
    torch.testing.assert_close(combine_gradients(zero, [g], 0.0, [0.5], "mbssl", R), (1 - R) * g)
    out = combine_gradients(t(1, 2), [zero], 1.0, [0.0], "B", R)  # n̄t = 0: no division by zero
    torch.testing.assert_close(out, t(1, 2))


def test_unknown_strategy_and_settings_are_rejected():
    with pytest.raises(ValueError, match="strategy"):
        combine_gradients(t(1), [t(1)], 1.0, [1.0], "D", R)
    with pytest.raises(ValueError, match="strategy"):
        HMG(strategy="none")
    with pytest.raises(ValueError, match="beta"):
        HMG(beta=1.0)


# ---------------------------------------------------------------------------------------------- the combiner
def linear(weights: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A loss whose gradient w.r.t. ``param`` is ``weights`` whatever the parameter value."""
    return (weights.to(param.dtype) * param).sum()


def test_moving_norms_and_gradients_over_two_steps_match_a_hand_computation():
    p, q, unused = (nn.Parameter(torch.zeros(n, dtype=torch.float64)) for n in (2, 2, 1))
    hmg = HMG("mbssl", relax=R, beta=0.9)
    # step 1: T0 = two target losses, g0(p) = (3, 4); aux/a: g(p) = (-30, 0), g(q) = (1, 0)
    losses = {"bpr/buy": linear(t(3, 0), p), "bpr/cart": linear(t(0, 4), p),
              "aux/a": linear(t(-30, 0), p) + linear(t(1, 0), q)}
    hmg.backward(losses, [p, q, unused])
    # n̄0(p) = 0.5, n̄a(p) = 3 > 0.5: project (conflict) then scale by 0.7 * 0.5 / 3 + 0.3
    torch.testing.assert_close(p.grad, t(-5, 10))
    # q: n̄0 = 0 < n̄a = 0.1, g0 = 0 (no projection), scale 0.7 * 0 + 0.3
    torch.testing.assert_close(q.grad, t(0.3, 0))
    assert unused.grad is None
    for param in (p, q):
        param.grad = None
    # step 2: aux/a gives g(p) = (0, 2) (no conflict), g(q) = (1, 0); a new task aux/b gives g(p) = (-1, 0)
    losses = {"bpr/buy": linear(t(3, 4), p), "aux/a": linear(t(0, 2), p) + linear(t(1, 0), q),
              "aux/b": linear(t(-1, 0), p)}
    hmg.backward(losses, [p, q, unused])
    norms = hmg.state_dict()["moving_norms"]
    assert hmg.aux_names == ["aux/a", "aux/b"]
    torch.testing.assert_close(norms[0], t(0.9 * 0.5 + 0.1 * 5, 0.9 * 3 + 0.1 * 2, 0.1 * 1))
    torch.testing.assert_close(norms[1], t(0, 0.9 * 0.1 + 0.1 * 1, 0))
    torch.testing.assert_close(norms[2], t(0, 0, 0))
    scale_a = R * 0.95 / 2.9 + (1 - R)                            # n̄a = 2.9 > n̄0 = 0.95; aux/b: 0.1 < 0.95
    torch.testing.assert_close(p.grad, t(3, 4) + scale_a * t(0, 2) + t(-1, 0))
    torch.testing.assert_close(q.grad, t(0.3, 0))


def test_global_scope_applies_the_rule_to_all_parameters_at_once():
    """scope="global" (the paper's one θ): norms, inner product, gate and scale over the concatenation of
    every reached parameter, one row of moving norms; reg gradients are added unchanged."""
    p, q, unused = (nn.Parameter(torch.zeros(n, dtype=torch.float64)) for n in (2, 2, 1))
    hmg = HMG("mbssl", relax=R, beta=0.9, scope="global")
    losses = {"rec": linear(t(3, 4), p), "aux/a": linear(t(-30, 0), p) + linear(t(1, 0), q),
              "reg/l2": linear(t(0.5, 0), q)}
    hmg.backward(losses, [p, q, unused])
    # θ-gradients: g0 = (3, 4, 0, 0), ga = (-30, 0, 1, 0); n̄0 = 0.5, n̄a = 0.1 · √901 > n̄0
    n_a = 0.1 * 901 ** 0.5
    projected = t(-30, 0, 1, 0) + 90 / 25 * t(3, 4, 0, 0)          # <ga, g0> = -90 < 0: remove the g0 part
    combined = t(3, 4, 0, 0) + (R * 0.5 / n_a + 1 - R) * projected
    torch.testing.assert_close(p.grad, combined[:2])
    torch.testing.assert_close(q.grad, combined[2:] + t(0.5, 0))
    assert unused.grad is None
    (norms,) = hmg.state_dict()["moving_norms"]
    torch.testing.assert_close(norms, t(0.5, n_a))
    # per tensor, q (g0 = 0) would only get the 0.3 floor: the scopes differ
    per_tensor = HMG("mbssl", relax=R, beta=0.9)
    for param in (p, q):
        param.grad = None
    per_tensor.backward({"rec": linear(t(3, 4), p), "aux/a": linear(t(-30, 0), p) + linear(t(1, 0), q)},
                        [p, q, unused])
    torch.testing.assert_close(q.grad, t(1 - R, 0))
    with pytest.raises(ValueError, match="scope"):
        HMG(scope="layer")


def test_algorithm1_projection_always_removes_an_aligned_component_too():
    # g0 = (3, 4), g = (30, 0): <g, g0> = 90 > 0, no conflict; n̄t = 3 > n̄0 = 0.5 so the rule is active
    scale = R * 0.5 / 3.0 + (1 - R)
    out = combine_gradients(t(3, 4), [t(30, 0)], 0.5, [3.0], "mbssl", R)
    torch.testing.assert_close(out, t(3, 4) + scale * t(30, 0))            # released: scaled, not projected
    out = combine_gradients(t(3, 4), [t(30, 0)], 0.5, [3.0], "mbssl", R, projection="always")
    torch.testing.assert_close(out, t(3, 4) + scale * t(19.2, -14.4))      # (30, 0) - 90/25 (3, 4)
    # the gate still holds: a smaller aux gradient is not projected either way
    out = combine_gradients(t(3, 4), [t(1, 0)], 5.0, [1.0], "mbssl", R, projection="always")
    torch.testing.assert_close(out, t(4, 4))


def test_algorithm1_scale_norm_uses_the_projected_gradient():
    # g = (-30, 0) projects to (-19.2, 14.4), norm 24 (raw moving norm 3 is ignored)
    out = combine_gradients(t(3, 4), [t(-30, 0)], 0.5, [3.0], "mbssl", R, scale_norm="projected")
    torch.testing.assert_close(out, t(3, 4) + (R * 0.5 / 24 + 1 - R) * t(-19.2, 14.4))
    out = combine_gradients(t(3, 4), [t(-30, 0)], 0.5, [3.0], "mbssl", 1.0, scale_norm="projected")
    assert float(torch.linalg.vector_norm(out - t(3, 4))) == pytest.approx(0.5)   # r = 1: exactly n̄0
    with pytest.raises(ValueError, match="projection"):
        combine_gradients(t(3, 4), [t(1, 0)], 1.0, [1.0], "mbssl", R, projection="sometimes")
    with pytest.raises(ValueError, match="scale_norm"):
        HMG(scale_norm="moving")


def test_algorithm1_word_for_word_through_the_config():
    """global scope, beta 0, projection always, projected norm: Algorithm 1 lines 2-10 on one θ."""
    cfg = TrainConfig(hmg=HMGConfig(strategy="mbssl", relax=R, beta=0.0, scope="global", projection="always",
                                    scale_norm="projected"))
    hmg = make_combiner(cfg.hmg)
    p, q = (nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(2))
    hmg.backward({"rec": linear(t(3, 4), p), "aux/a": linear(t(30, 0), p) + linear(t(0, 10), q),
                  "aux/b": linear(t(1, 1), q)}, [p, q])
    g0, ga, gb = t(3, 4, 0, 0), t(30, 0, 0, 10), t(0, 0, 1, 1)
    # ‖ga‖ = √1000 > ‖g0‖ = 5: project (aligned, <ga, g0> = 90) then scale by the projected norm
    pa = ga - 90 / 25 * g0
    pa = (R * 5 / float(torch.linalg.vector_norm(pa)) + 1 - R) * pa
    expected = g0 + pa + gb                                                # ‖gb‖ = √2 < 5: unchanged
    torch.testing.assert_close(torch.cat([p.grad, q.grad]), expected)


def test_reg_losses_are_added_unchanged_and_do_not_enter_the_norms():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    def tasks() -> dict[str, torch.Tensor]:
        return {"rec": linear(t(3, 4), p), "aux/a": linear(t(-30, 0), p)}

    plain, with_reg = HMG("mbssl"), HMG("mbssl")
    plain.backward(tasks(), [p])
    expected = p.grad.clone()
    p.grad = None
    with_reg.backward({**tasks(), "reg/l2": linear(t(0.5, -2), p)}, [p])
    torch.testing.assert_close(p.grad, expected + t(0.5, -2))
    torch.testing.assert_close(with_reg.moving_norms[0], plain.moving_norms[0])


def test_gradients_accumulate_into_existing_grad():
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = t(1, 1)
    HMG("A").backward({"rec": linear(t(3, 4), p)}, [p])
    torch.testing.assert_close(p.grad, t(4, 5))


# ---------------------------------------------------------------------------------------------- a tiny model
@dataclass
class AuxMFConfig:
    dim: int = 8


class AuxMF(Recommender):
    """MF with a target BPR loss, one auxiliary BPR loss per upstream behavior, and an L2 regulariser."""

    Config = AuxMFConfig

    def __init__(self, dataset, config: AuxMFConfig | None = None, device="cpu") -> None:
        super().__init__(dataset, config, device)
        self.user_emb = nn.Parameter(0.1 * torch.randn(self.n_users, self.config.dim))
        self.item_emb = nn.Parameter(0.1 * torch.randn(self.n_items, self.config.dim))
        self.batch_spec = BPRSpec(positives=2)

    def _bpr(self, batch: Batch, behavior: str) -> torch.Tensor:
        tr = batch.triples[behavior]
        u = self.user_emb[tr.users]
        return bpr_loss((u * self.item_emb[tr.positives]).sum(-1), (u * self.item_emb[tr.negatives]).sum(-1))

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = {"bpr": self._bpr(batch, self.behaviors[-1])}
        out.update({f"aux/bpr/{b}": self._bpr(batch, b) for b in self.behaviors[:-1]})
        out["reg/l2"] = 1e-3 * l2_of_rows(self.user_emb[batch.users])
        return out

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=60, n_items=50, seed=0, mean_views=12.0)


def first_batch(model: Recommender, dataset, seed: int, batch_size: int) -> Batch:
    """The trainer's first batch for ``seed`` (same RNG use as ``Trainer.fit``)."""
    rng = seed_everything(seed)
    return next(iter(make_sampler(model.batch_spec, dataset, batch_size).epoch(rng)))


def test_state_dict_round_trip_continues_identically(dataset):
    torch.manual_seed(0)
    model = AuxMF(dataset)
    batches = [first_batch(model, dataset, s, 16) for s in (1, 2, 3)]
    params = list(model.parameters())
    first = HMG("C", relax=0.5, beta=0.8)
    for batch in batches[:2]:
        first.backward(model.losses(batch), params)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = HMG("C", relax=0.5, beta=0.8)
    resumed.load_state_dict(torch.load(buffer))
    results = []
    for combiner in (first, resumed):
        model.zero_grad(set_to_none=True)
        combiner.backward(model.losses(batches[2]), params)
        results.append(([p.grad.clone() for p in params], combiner.state_dict()))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert torch.equal(a, b)
    assert results[0][1]["aux_names"] == results[1][1]["aux_names"] == ["aux/bpr/view", "aux/bpr/cart"]
    for a, b in zip(results[0][1]["moving_norms"], results[1][1]["moving_norms"], strict=True):
        assert torch.equal(a, b)


def test_hmg_without_manipulation_equals_plain_summation(dataset):
    """B with r = 0 scales by 1 and never projects: the same gradients as ``sum(losses).backward()``."""
    torch.manual_seed(0)
    model = AuxMF(dataset)
    params = list(model.parameters())
    batch = first_batch(model, dataset, 0, 32)
    SumCombiner().backward(model.losses(batch), params)
    summed = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    HMG("B", relax=0.0).backward(model.losses(batch), params)
    for p, s in zip(params, summed, strict=True):
        torch.testing.assert_close(p.grad, s)


# ---------------------------------------------------------------------------------------------- parallel tasks
def small_mbssl(dataset) -> Recommender:
    """A small MBSSL: custom autograd sparse products and InfoNCE, five tasks (rec, 3 aux, reg)."""
    torch.manual_seed(0)
    return build_model("mbssl", dataset, {"dim": 8, "layers": 2, "attention_dim": 4,
                                          "rec_weights": [0.2, 0.5, 0.3], "label_quantile": 0.95})


def mbssl_losses(model: Recommender, dataset, seed: int) -> dict[str, torch.Tensor]:
    batch = first_batch(model, dataset, seed, 16)
    torch.manual_seed(seed)                                         # the same dropout masks every call
    return model.losses(batch)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_parallel_task_backwards_equal_the_sequential_ones(dataset, tmp_path, monkeypatch, threads):
    monkeypatch.setenv("MBREC_CACHE_DIR", str(tmp_path))
    results = []
    for task_threads in (1, threads):
        model = small_mbssl(dataset)
        params = [p for p in model.parameters() if p.requires_grad]
        hmg = HMG("mbssl", task_threads=task_threads)
        for seed in (1, 2):                                         # second batch: moving norms in play
            losses = mbssl_losses(model, dataset, seed)
            assert sum(k.startswith("aux/") for k in losses) == 3 and "reg/l2" in losses
            model.zero_grad(set_to_none=True)
            hmg.backward(losses, params)
        results.append(([p.grad.clone() for p in params], hmg.state_dict()["moving_norms"]))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_parallel_task_backwards_restore_threads_and_reraise(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("MBREC_CACHE_DIR", str(tmp_path))
    model = small_mbssl(dataset)
    losses = mbssl_losses(model, dataset, 1)
    params = [p for p in model.parameters() if p.requires_grad]
    before = torch.get_num_threads()
    HMG("mbssl", task_threads=2).backward(losses, params)
    assert torch.get_num_threads() == before
    assert all(p.grad is not None for p in params)

    class Fails(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("task backward failed")

    losses = mbssl_losses(model, dataset, 2)
    losses["aux/intra"] = Fails.apply(losses["aux/intra"])
    with pytest.raises(RuntimeError, match="task backward failed"):
        HMG("mbssl", task_threads=2).backward(losses, params)
    assert torch.get_num_threads() == before


def test_task_threads_must_be_positive():
    with pytest.raises(ValueError, match="task_threads"):
        HMG("mbssl", task_threads=0)
    cfg = TrainConfig(hmg=HMGConfig(strategy="mbssl", task_threads=0))
    with pytest.raises(ConfigError, match="task_threads"):
        cfg.validate()


# ---------------------------------------------------------------------------------------------- trainer
def one_step_config(strategy: str, **hmg) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=1000, lr=0.01, eval_every=1, protocol="paper", progress=False,
                       ks=[10], seed=7, hmg=HMGConfig(strategy=strategy, **hmg))


def train_one_step(model: Recommender, dataset, cfg: TrainConfig, run_dir) -> Trainer:
    trainer = Trainer(model, dataset, cfg, run_dir, log=lambda m: None)
    trainer.fit()
    return trainer


def test_strategy_none_is_the_plain_sum_through_the_trainer(dataset, tmp_path):
    torch.manual_seed(0)
    model = AuxMF(dataset)
    manual = copy.deepcopy(model)
    trainer = train_one_step(model, dataset, one_step_config("none"), tmp_path / "none")
    assert isinstance(trainer.combiner, SumCombiner)
    assert isinstance(make_combiner(HMGConfig(strategy="mbssl")), HMG)
    batch = first_batch(manual, dataset, 7, 1000)                 # one batch = the whole epoch
    optimizer = torch.optim.Adam(manual.parameters(), lr=0.01)
    sum(manual.losses(batch).values()).backward()
    optimizer.step()
    for a, b in zip(model.parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_hmg_runs_through_the_trainer_with_a_model_with_aux_losses(dataset, tmp_path):
    torch.manual_seed(0)
    model = AuxMF(dataset)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = train_one_step(model, dataset, one_step_config("mbssl", relax=0.5, beta=0.8), tmp_path)
    hmg = trainer.combiner
    assert isinstance(hmg, HMG) and (hmg.strategy, hmg.relax, hmg.beta) == ("mbssl", 0.5, 0.8)
    assert hmg.aux_names == ["aux/bpr/view", "aux/bpr/cart"]
    assert all(bool((n > 0).all()) for n in hmg.moving_norms)     # every tensor got every task's gradient
    for old, new in zip(before, model.parameters(), strict=True):
        assert not torch.equal(old, new)
    saved = torch.load(tmp_path / "last.pt", weights_only=False)["combiner"]
    for a, b in zip(saved["moving_norms"], hmg.moving_norms, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif("copf" not in available_models(), reason="COPF is not registered")
def test_hmg_runs_through_the_trainer_with_copf(dataset, tmp_path):
    torch.manual_seed(0)
    model = build_model("copf", dataset, {"dim": 8})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = train_one_step(model, dataset, one_step_config("mbssl"), tmp_path)
    assert trainer.combiner.aux_names == [f"aux/cl/{b}" for b in dataset.behaviors[:-1]]
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert {"user_emb", "item_emb"} <= changed
