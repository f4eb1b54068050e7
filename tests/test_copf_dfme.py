"""DFME (copf.md §4) and the contrastive loss (§4.1): fast paths against plain per-pair references
(float64, outputs and gradients), expert slot order, the shared gate and every stop-gradient mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mbrec.data.dataset import binary_csr
from mbrec.models.copf import dfme as dfme_module
from mbrec.models.copf.cogcn import GraphBank, split_tables
from mbrec.models.copf.contrastive import behavior_contrast, contrastive_losses
from mbrec.models.copf.dfme import DFME, detached_behaviors, stack_pair

M, N, K, D = 30, 20, 3, 8
STOP_GRADS = ["official", "paper", "paper_gate", "none", "all"]


@pytest.fixture(scope="module")
def graphs():
    """Per-behavior Â_k (float64 operators) of a random 3-behavior graph with an isolated user."""
    rng = np.random.default_rng(1)
    mats = []
    for density in (0.4, 0.2, 0.1):
        dense = rng.random((M, N)) < density
        dense[M - 1] = False
        mats.append(binary_csr(*np.nonzero(dense), (M, N)))
    bank = GraphBank(mats)
    ops = [bank.behavior(k) for k in range(K)]
    for op in ops:
        op.matrix, op.transpose = op.matrix.double(), op.transpose.double()
    return ops


def random_tables(seed: int = 0, scale: float = 0.3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    def table(rows: int) -> torch.Tensor:
        return (scale * torch.randn(rows, D, generator=gen, dtype=torch.float64)).requires_grad_()

    return [(table(M), table(N)) for _ in range(K)]


def make_dfme(graphs, seed: int = 0, **kwargs) -> DFME:
    torch.manual_seed(seed)
    head = DFME(graphs, dim=D, **kwargs).double()
    with torch.no_grad():  # non-trivial R, W_l, b_g so every parameter matters
        head.behavior_emb.mul_(5.0)
        head.gate_bias.copy_(torch.randn(K))
    return head


# ------------------------------------------------------------------------------------ plain reference
def reference_detached(mode: str, k: int, j: int, fit_layers: int) -> bool:
    """Eq. 14 / the released code's behavior, written out per (task, other behavior)."""
    return {"official": fit_layers - 1 == K - 1, "paper": j == K - 1 and k < K - 1,
            "paper_gate": j == K - 1 and k < K - 1, "none": False, "all": True}[mode]


def reference_fitting_table(head: DFME, tables, k: int, j: int) -> torch.Tensor:
    """T_{k,j} = s Σ_l Y^l, Y⁰ = (αX_j + βX_k)/2, Y^{l+1} = Â_k(Y^l ∘ r^l) + Y^l (dense Â_k)."""
    graph = torch.from_numpy(head.graphs[k].scipy.toarray()).double()
    stacked = [torch.cat(pair) for pair in tables]
    y = [(head.alpha * stacked[j] + head.beta * stacked[k]) / 2]
    r = head.behavior_emb[k]
    for layer in range(head.fit_layers[k]):
        if layer >= 1:
            r = r @ head.layer_weights[layer - 1]
        y.append(graph @ (y[-1] * r) + y[-1])
    return head.fit_scale * sum(y)


def reference_task_scores(head: DFME, tables, k: int, users, items) -> torch.Tensor:
    """§4.7 ``task_scores`` per pair, with the stop-gradient of Eq. 14 applied literally."""
    eu, ev = tables[k]
    experts, detached_terms = [eu[users] * ev[items]], [False]
    for j in range(K):
        if j == k:
            continue
        if head.forward == "fit":
            table = reference_fitting_table(head, tables, k, j)
            tu, tv = table[:M], table[M:]
        else:
            tu, tv = tables[j]
        if reference_detached(head.stop_grad, k, j, head.fit_layers[k]):
            tu, tv = tu.detach(), tv.detach()
            detached_terms.append(head.stop_grad == "paper_gate")
        else:
            detached_terms.append(False)
        experts.append(tu[users] * tv[items])
    gate = torch.softmax(torch.cat([eu[users], ev[items]], 1) @ head.gate_weight + head.gate_bias, dim=-1)
    fused = 0
    for s, x in enumerate(experts):
        term = gate[:, s:s + 1] * x
        fused = fused + (term.detach() if detached_terms[s] else term)
    return head.mult * fused.sum(-1)


def grads_or_zeros(loss, inputs):
    grads = torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]


# ------------------------------------------------------------------------------------ tests
def test_fused_fitting_tables_equal_per_pair_reference(graphs):
    head = make_dfme(graphs, fit_layers=[2, 1, 3])
    assert len(head.layer_weights) == 2                          # W_1, W_2 exist for L = 3
    tables = random_tables()
    stacked = [torch.cat(pair) for pair in tables]
    for k in range(K):
        others = [j for j in range(K) if j != k]
        fused = head.fitting_tables(stacked, k, others)
        for j, table in zip(others, fused, strict=True):
            ref = reference_fitting_table(head, tables, k, j)
            torch.testing.assert_close(table, ref, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(table, head.fitting_tables(stacked, k, [j])[0], rtol=1e-12, atol=1e-14)


def test_slot_order_and_shared_gate(graphs):
    head = make_dfme(graphs, forward="plain")
    tables = random_tables()
    state = head.prepare(tables, range(K))
    gate_params = [p for name, p in head.named_parameters() if name.startswith("gate")]
    assert [tuple(p.shape) for p in gate_params] == [(2 * D, K), (K,)]  # one W_g, b_g for all tasks
    for k in range(K):
        slots = state[k].slots
        assert slots[0][0] is tables[k][0] and slots[0][1] is tables[k][1]           # slot 0: own behavior
        assert [s[0] for s in slots[1:]] == [tables[j][0] for j in range(K) if j != k]  # then j ascending
        torch.testing.assert_close(state[k].gate_users, tables[k][0] @ head.gate_weight[:D] + head.gate_bias)
        torch.testing.assert_close(state[k].gate_items, tables[k][1] @ head.gate_weight[D:])
    users, items = torch.arange(M) % 7, torch.arange(M) % N
    for k in (0, K - 1):                                          # every task trains the same gate
        grad = torch.autograd.grad(head.pair_scores(state, k, users, items).sum(), head.gate_weight,
                                   retain_graph=True)[0]
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("forward", ["fit", "plain"])
@pytest.mark.parametrize("stop_grad", STOP_GRADS)
def test_pair_scores_and_gradients_equal_reference(graphs, stop_grad, forward):
    fit_layers = [3, 2, 1] if stop_grad == "official" else [2, 1, 2]   # official detaches task 0 (L-1 = K-1)
    head = make_dfme(graphs, fit_layers=fit_layers, stop_grad=stop_grad, forward=forward)
    tables = random_tables()
    inputs = [t for pair in tables for t in pair] + list(head.parameters())
    gen = torch.Generator().manual_seed(3)
    users, items = torch.randint(M, (50,), generator=gen), torch.randint(N, (50,), generator=gen)
    weights = torch.randn(50, generator=gen, dtype=torch.float64)
    state = head.prepare(tables, range(K))
    for k in range(K):
        fast = head.pair_scores(state, k, users, items)
        ref = reference_task_scores(head, tables, k, users, items)
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
        for g_fast, g_ref in zip(grads_or_zeros((fast * weights).sum(), inputs),
                                 grads_or_zeros((ref * weights).sum(), inputs), strict=True):
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(("stop_grad", "fit_layers"), [("official", [1, 1, 1]), ("official", [3, 2, 1]),
                                                       ("paper", [0, 2, 1]), ("paper_gate", [2, 1, 2]),
                                                       ("none", [1, 3, 0]), ("all", [1, 1, 2])])
def test_row_restricted_training_path_equals_full_tables(graphs, stop_grad, fit_layers):
    """prepare_pairs (last fitting layer on the scored rows only) = prepare: scores and every gradient."""
    head = make_dfme(graphs, fit_layers=fit_layers, stop_grad=stop_grad)
    tables = random_tables()
    inputs = [t for pair in tables for t in pair] + list(head.parameters())
    gen = torch.Generator().manual_seed(5)
    pairs = {k: (torch.randint(M, (40,), generator=gen), torch.randint(N, (40,), generator=gen)) for k in range(K)}
    weights = torch.randn(40, generator=gen, dtype=torch.float64)
    full, compact = head.prepare(tables, range(K)), head.prepare_pairs(tables, pairs)
    for k, (users, items) in pairs.items():
        assert compact[k].user_rows is not None and len(compact[k].slots[0][0]) == len(torch.unique(users))
        fast, ref = head.pair_scores(compact, k, users, items), head.pair_scores(full, k, users, items)
        torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-13)
        for g_fast, g_ref in zip(grads_or_zeros((fast * weights).sum(), inputs),
                                 grads_or_zeros((ref * weights).sum(), inputs), strict=True):
            torch.testing.assert_close(g_fast, g_ref, rtol=1e-11, atol=1e-13)
    outside = int(torch.tensor([u for u in range(M) if u not in pairs[0][0].tolist()])[0])
    with pytest.raises(ValueError, match="outside the rows"):
        head.pair_scores(compact, 0, torch.tensor([outside]), pairs[0][1][:1])
    with pytest.raises(ValueError, match="cannot score all items"):
        head.all_scores(compact, K - 1, torch.arange(3))


def test_row_restriction_falls_back_to_full_tables(graphs):
    pairs = {0: (torch.tensor([1, 2]), torch.tensor([3, 4])), 1: (torch.zeros(0, dtype=torch.long),) * 2}
    head = make_dfme(graphs)
    state = head.prepare_pairs(random_tables(), pairs)
    assert state[0].user_rows is not None and state[1].user_rows is None          # no pairs: full tables
    head.restrict_rows = False
    assert head.prepare_pairs(random_tables(), pairs)[0].user_rows is None
    assert make_dfme(graphs, forward="plain").prepare_pairs(random_tables(), pairs)[0].user_rows is None


@pytest.mark.parametrize("stop_grad", ["official", "paper_gate"])
def test_all_item_scores_equal_per_pair_reference(graphs, stop_grad, monkeypatch):
    monkeypatch.setattr(dfme_module, "PAIR_BUDGET", 7 * K * 6)       # several uneven item chunks
    head = make_dfme(graphs, stop_grad=stop_grad, fit_layers=[1, 2, 1])
    tables = random_tables(5)
    users = torch.tensor([0, 3, 3, 11, 17, 29, M - 1])
    with torch.no_grad():
        fast = head.all_scores(head.prepare(tables, [K - 1]), K - 1, users)
        ref = torch.stack([reference_task_scores(head, tables, K - 1, torch.full((N,), int(u)),
                                                 torch.arange(N)) for u in users])
    assert fast.shape == (len(users), N)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)


def aux_task_gradients(head: DFME, tables, k: int) -> list[torch.Tensor]:
    """d(BPR of auxiliary task k)/d(EU[K-1], EV[K-1], R, W_g) — the target tables reach task k only
    through the fitting expert T_{k,K-1}."""
    gen = torch.Generator().manual_seed(k)
    users = torch.randint(M - 1, (40,), generator=gen)
    pos, neg = torch.randint(N, (40,), generator=gen), torch.randint(N, (40,), generator=gen)
    state = head.prepare(tables, [k])
    scores = head.pair_scores(state, k, torch.cat([users, users]), torch.cat([pos, neg]))
    loss = F.softplus(-(scores[:40] - scores[40:])).mean()
    return grads_or_zeros(loss, [*tables[K - 1], head.behavior_emb, head.gate_weight, tables[k][0]])


@pytest.mark.parametrize("stop_grad, blocked", [("paper", True), ("paper_gate", True), ("all", True),
                                                ("official", False), ("none", False)])
def test_stop_gradient_of_the_target_fitting_expert(graphs, stop_grad, blocked):
    head = make_dfme(graphs, stop_grad=stop_grad)                 # L_m = 1: official detaches nothing
    tables = random_tables(2)
    for k in range(K - 1):
        g_eu, g_ev, g_r, g_gate, g_own = aux_task_gradients(head, tables, k)
        assert bool(g_eu.abs().sum() == 0 and g_ev.abs().sum() == 0) is blocked
        assert g_gate.abs().sum() > 0 and g_own.abs().sum() > 0   # the gate and own expert still learn
        assert bool(g_r.abs().sum() == 0) is (stop_grad == "all")  # R_k only via fitting tables
    g_eu, *_ = aux_task_gradients(head, tables, K - 1)            # the target task uses its own tables
    assert g_eu.abs().sum() > 0


def test_target_task_still_trains_auxiliary_tables_under_paper(graphs):
    head = make_dfme(graphs, stop_grad="paper")
    tables = random_tables(4)
    state = head.prepare(tables, [K - 1])
    score = head.pair_scores(state, K - 1, torch.arange(10), torch.arange(10)).sum()
    assert torch.autograd.grad(score, tables[0][0])[0].abs().sum() > 0


def test_paper_gate_detaches_the_gate_weight_of_the_target_slot(graphs):
    tables = random_tables(6)
    by_mode = {}
    for mode in ("paper", "paper_gate"):
        head = make_dfme(graphs, stop_grad=mode)
        by_mode[mode] = aux_task_gradients(head, tables, 0)[3]
    assert not torch.allclose(by_mode["paper"], by_mode["paper_gate"])


def test_detached_behaviors_rule():
    assert detached_behaviors("official", 0, 3, 1) == frozenset()
    assert detached_behaviors("official", 1, 3, 3) == {0, 2}          # the released code's quirk
    assert detached_behaviors("paper", 0, 3, 1) == {2}
    assert detached_behaviors("paper", 2, 3, 1) == frozenset()
    assert detached_behaviors("all", 1, 3, 1) == {0, 2}
    with pytest.raises(ValueError, match="stop_grad"):
        detached_behaviors("sometimes", 0, 3, 1)


def test_fitting_expert_scale_is_tiny_compared_with_plain(graphs):
    """At L_m = 1, T_{k,j} ≈ 0.1·(2Y⁰ + Â(Y⁰∘R)), Y⁰ ≈ 0.05 e^j: the expert is ~1e-4 of the plain one."""
    head = make_dfme(graphs)
    with torch.no_grad():
        head.behavior_emb.zero_()
    tables = random_tables(7)
    state = head.prepare(tables, [2])
    tu, _ = state[2].slots[1]
    expected = 0.1 * 2 * (0.1 * tables[0][0] + 0.001 * tables[2][0]) / 2
    torch.testing.assert_close(tu, expected, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------ contrastive loss
def loop_contrast(target, aux, users, items, tau, mode) -> torch.Tensor:
    """§4.1 [C], one anchor row at a time: Σ_n [-cos/τ + log Σ_m exp(cos/τ)] / M, both sides over M."""
    def side(anchor_table, other_table, ids):
        total = 0.0
        for a in ids.tolist():
            cos = torch.stack([F.cosine_similarity(anchor_table[a], other_table[m], dim=0, eps=1e-12)
                               for m in range(other_table.shape[0])])
            total = total - cos[a] / tau + torch.log(torch.exp(cos / tau).sum())
        return total
    out = 0.0
    if mode != "item_side":
        out = out + side(target[0], aux[0], users)
    if mode != "user_side":
        out = out + side(target[1], aux[1], items)
    return out / target[0].shape[0]


@pytest.mark.parametrize("mode, tau", [("both_side", 0.2), ("user_side", 0.1), ("item_side", 0.1),
                                       ("both_side", 0.01)])  # τ = 0.01: row-max shift instead of 1/τ
def test_contrastive_loss_equals_loop(mode, tau):
    tables = random_tables(8)
    users = torch.tensor([3, 3, 3, 7, 0, 12, 12])                 # users repeated once per positive
    items = torch.tensor([1, 5, 5, 2, 19, 0, 7])
    fast = behavior_contrast(tables[2], tables[0], users, items, tau, mode)
    ref = loop_contrast(tables[2], tables[0], users, items, tau, mode)
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    inputs = [t for pair in tables for t in pair]
    for g_fast, g_ref in zip(grads_or_zeros(fast, inputs), grads_or_zeros(ref, inputs), strict=True):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-12)


def test_contrastive_losses_cover_every_auxiliary_behavior_with_weight():
    tables = random_tables(9)
    users, items = torch.tensor([1, 2, 2]), torch.tensor([4, 4, 6])
    losses = contrastive_losses(tables, users, items, tau=0.1, weight=0.5)
    assert len(losses) == K - 1
    for k, loss in enumerate(losses):
        expected = 0.5 * loop_contrast(tables[-1], tables[k], users, items, 0.1, "both_side")
        torch.testing.assert_close(loss, expected)
    empty = behavior_contrast(tables[2], tables[0], users[:0], items[:0])
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_stack_pair_reads_a_split_table_back_without_a_copy():
    """The pair split_tables gives is turned back into its own [M+N, d] tensor (no copy, same gradient as
    a cat); any other pair is concatenated."""
    x = torch.randn(M + N, 4, dtype=torch.float64, requires_grad=True)
    encoded = x * 2                                               # a non-leaf, as an encoder's output
    pair = split_tables([encoded], M)[0]
    assert stack_pair(pair) is encoded
    weights = torch.randn(M + N, 4, dtype=torch.float64)
    (via_base,) = torch.autograd.grad((stack_pair(pair) * weights).sum() + pair[0].pow(2).sum(), x,
                                      retain_graph=True)
    (via_cat,) = torch.autograd.grad((torch.cat(pair) * weights).sum() + pair[0].pow(2).sum(), x)
    torch.testing.assert_close(via_base, via_cat, rtol=0, atol=0)
    columns = encoded[:, :2]                                       # views of a column block: not the base
    for other in [(pair[1], pair[0]), (x[:M], x[M:] * 1), split_tables([columns], M)[0]]:
        stacked = stack_pair(other)
        assert stacked is not encoded and stacked is not x
        torch.testing.assert_close(stacked, torch.cat(other), rtol=0, atol=0)
