"""Trainer: schedules, protocols, early stopping, exact resume, atomic checkpoints, config validation."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from mbrec.config import ConfigError, RunConfig, TrainConfig, apply_overrides, from_dict, load_run_config
from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.samplers import UserSpec
from mbrec.models.base import Recommender, build_model
from mbrec.train.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from mbrec.train.schedule import default_decay_steps, is_eval_epoch, learning_rate
from mbrec.train.trainer import Trainer

M, N = 50, 40


def quiet(_: str) -> None:
    pass


def make_dataset(seed: int = 0, with_valid: bool = False) -> MultiBehaviorDataset:
    rng = np.random.default_rng(seed)
    shape = (M, N)
    view = rng.random(shape) < 0.3
    cart = view & (rng.random(shape) < 0.5)
    buy = (rng.random(shape) < 0.08) | (cart & (rng.random(shape) < 0.3))
    test_items = rng.integers(0, N, M)
    valid_items = (test_items + 1 + rng.integers(0, N - 1, M)) % N
    buy[np.arange(M), test_items] = False
    buy[np.arange(M), valid_items] = False
    users = np.arange(M)
    return MultiBehaviorDataset(
        f"toy{seed}", M, N, ["view", "cart", "buy"],
        {"view": binary_csr(*np.nonzero(view), shape), "cart": binary_csr(*np.nonzero(cart), shape),
         "buy": binary_csr(*np.nonzero(buy), shape)},
        binary_csr(users, test_items, shape),
        binary_csr(users, valid_items, shape) if with_valid else None)


class Scripted(Recommender):
    """Scores fixed per epoch: after 0-based epoch e, the held-out item of users ``u < test_hits[e]``
    (``valid_hits[e]`` for the validation item) is ranked first, for the others last. So HR@1 after
    epoch e is exactly ``test_hits[e] / M`` on test and ``valid_hits[e] / M`` on valid."""

    def __init__(self, dataset: MultiBehaviorDataset, test_hits: list[int], valid_hits: list[int]) -> None:
        super().__init__(dataset)
        self.weight = nn.Parameter(torch.ones(1))
        self.batch_spec = UserSpec(users="all")
        self.test_hits, self.valid_hits = test_hits, valid_hits
        self.test_item = torch.from_numpy(dataset.test.indices.astype(np.int64))
        self.valid_item = torch.from_numpy(dataset.valid.indices.astype(np.int64))
        self.epoch = -1

    def prepare_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def losses(self, batch):
        return {"loss": (self.weight ** 2).sum()}

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        scores = torch.zeros(len(users), self.n_items)
        rows = torch.arange(len(users))
        e = self.epoch
        scores[rows, self.test_item[users]] = torch.where(users < self.test_hits[e], 2.0, -1.0)
        scores[rows, self.valid_item[users]] = torch.where(users < self.valid_hits[e], 2.0, -1.0)
        return scores


def scripted_config(**kw) -> TrainConfig:
    base = dict(epochs=6, batch_size=64, lr=0.01, eval_every=1, ks=[1], select_metric="HR@1", progress=False)
    return TrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------- schedules
def test_staircase_learning_rate():
    cfg = TrainConfig(lr=1e-3, lr_schedule="staircase", lr_decay=0.96, batch_size=16)
    steps = default_decay_steps(cfg, n_users=70)
    assert steps == 70 // 16 == 4
    assert learning_rate(cfg, 0, 0, steps) == 1e-3
    assert learning_rate(cfg, steps - 1, 0, steps) == 1e-3
    assert learning_rate(cfg, steps, 1, steps) == pytest.approx(1e-3 * 0.96)
    assert learning_rate(cfg, 2 * steps + 1, 9, steps) == pytest.approx(1e-3 * 0.96 ** 2)
    explicit = TrainConfig(lr_schedule="staircase", decay_steps=10)
    assert default_decay_steps(explicit, n_users=70) == 10
    assert default_decay_steps(TrainConfig(batch_size=256), n_users=70) == 1  # never 0


def test_step_and_constant_learning_rate():
    cfg = TrainConfig(lr=0.01, lr_schedule="step", lr_decay=0.5, decay_epochs=3)
    assert [learning_rate(cfg, 999, e, 1) for e in range(7)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025])
    constant = TrainConfig(lr=0.01)
    assert learning_rate(constant, 10_000, 50, 1) == 0.01


def test_trainer_applies_the_staircase_per_optimiser_step(tmp_path):
    ds = make_dataset(with_valid=True)
    cfg = scripted_config(epochs=3, batch_size=16, lr=1e-2, lr_schedule="staircase", decay_steps=5)
    trainer = Trainer(Scripted(ds, [0] * 3, [0] * 3), ds, cfg, tmp_path, log=quiet)
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    assert len(trainer.sampler) == 4 and trainer.decay_steps == 5
    trainer.fit()
    assert seen == pytest.approx([1e-2 * 0.96 ** (t // 5) for t in range(3 * 4)])


def test_copf_eval_schedule():
    cfg = TrainConfig(epochs=200, eval_schedule="copf")
    evaluated = [e for e in range(200) if is_eval_epoch(cfg, e)]
    assert evaluated == [0, *range(93, 199, 3), 199]
    assert len(evaluated) == 38
    every = TrainConfig(epochs=7, eval_every=3)
    assert [e for e in range(7) if is_eval_epoch(every, e)] == [2, 5, 6]


def test_trainer_records_completed_epochs(tmp_path):
    """0-based epoch e is recorded as epoch e + 1; with ``copf``, 5 epochs evaluate after e = 0 and 4."""
    ds = make_dataset(with_valid=True)
    fit = Trainer(Scripted(ds, [1] * 5, [1] * 5), ds, scripted_config(epochs=5, eval_schedule="copf"),
                  tmp_path, log=quiet).fit()
    assert [h["epoch"] for h in fit.history] == [1, 5]
    assert fit.epochs_run == 5


def test_epochs_without_evaluation_log_a_heartbeat_line(tmp_path):
    """Without a progress bar every epoch leaves a line: evaluations as before, the others loss, lr, ETA."""
    ds = make_dataset(with_valid=True)
    lines: list[str] = []
    cfg = scripted_config(epochs=5, eval_schedule="copf", lr=0.1, lr_schedule="step", lr_decay=0.5,
                          decay_epochs=2)
    Trainer(Scripted(ds, [1] * 5, [1] * 5), ds, cfg, tmp_path, log=lines.append).fit()
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2/5", "epoch 3/5", "epoch 4/5", "epoch 5"]
    assert [line.split(" lr=")[1].split()[0] for line in lines[1:4]] == ["0.1", "0.05", "0.05"]  # 0.5^(e // 2)
    assert lines[3].endswith("min left)")
    quiet_lines: list[str] = []
    Trainer(Scripted(ds, [1] * 5, [1] * 5), ds, scripted_config(epochs=5, eval_schedule="copf", progress=True),
            tmp_path / "bar", log=quiet_lines.append).fit()
    assert [line.split(":")[0] for line in quiet_lines] == ["epoch 1", "epoch 5"]  # the bar shows the rest


# ---------------------------------------------------------------------------------------------- protocols
TEST_HITS = [10, 40, 20, 30, 5, 25]
VALID_HITS = [10, 20, 35, 30, 35, 5]


@pytest.mark.parametrize("protocol, expected_epoch", [("paper", 2), ("validation", 5)])
def test_protocol_selects_on_its_split(tmp_path, protocol, expected_epoch):
    ds = make_dataset(with_valid=True)
    fit = Trainer(Scripted(ds, TEST_HITS, VALID_HITS), ds, scripted_config(protocol=protocol), tmp_path,
                  log=quiet).fit()
    assert [h["test"]["HR@1"] for h in fit.history] == pytest.approx([h / M for h in TEST_HITS])
    assert [h["valid"]["HR@1"] for h in fit.history] == pytest.approx([h / M for h in VALID_HITS])
    # validation: 35 at epochs 3 and 5 -> the later one; its *test* number is reported
    assert fit.selected["epoch"] == expected_epoch
    assert fit.selected["test"]["HR@1"] == pytest.approx(TEST_HITS[expected_epoch - 1] / M)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == expected_epoch


def test_validation_protocol_needs_a_validation_split(tmp_path):
    ds = make_dataset()
    with pytest.raises(ValueError, match="validation split"):
        Trainer(build_model("mf", ds, {"dim": 4}), ds, scripted_config(protocol="validation"), tmp_path,
                log=quiet)


def test_early_stopping_with_patience(tmp_path):
    ds = make_dataset(with_valid=True)
    valid = [5, 20, 20, 15, 10, 45, 45, 45]
    model = Scripted(ds, [1] * 8, valid)
    fit = Trainer(model, ds, scripted_config(epochs=8, protocol="validation", patience=2), tmp_path,
                  log=quiet).fit()
    # epoch 3 ties the best (a tie counts as a gain, later epoch wins); 4 and 5 do not gain -> stop
    assert fit.stopped_early
    assert [h["epoch"] for h in fit.history] == [1, 2, 3, 4, 5]
    assert fit.epochs_run == 5
    assert fit.selected["epoch"] == 3
    # resuming a stopped run trains nothing more
    again = Trainer(Scripted(ds, [1] * 8, valid), ds, scripted_config(epochs=8, protocol="validation",
                                                                      patience=2), tmp_path, log=quiet)
    assert [h["epoch"] for h in again.fit(resume=True).history] == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------- resume
def lightgcn_run(ds, run_dir, epochs: int, init_seed: int, resume: bool = False):
    torch.manual_seed(init_seed)
    model = build_model("lightgcn", ds, {"dim": 8, "layers": 2, "reg": 1e-3})
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.02, lr_schedule="staircase", decay_steps=3,
                      eval_every=1, protocol="paper", ks=[10], seed=5, progress=False)
    trainer = Trainer(model, ds, cfg, run_dir, log=quiet)
    return model, trainer.fit(resume=resume), len(trainer.sampler)


def without_seconds(entries):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]


def test_resume_is_bit_identical(tmp_path):
    ds = make_dataset()
    straight, fit_straight, steps_per_epoch = lightgcn_run(ds, tmp_path / "straight", 4, init_seed=0)
    lightgcn_run(ds, tmp_path / "split", 2, init_seed=0)
    resumed, fit_resumed, _ = lightgcn_run(ds, tmp_path / "split", 4, init_seed=123, resume=True)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert without_seconds(fit_straight.history) == without_seconds(fit_resumed.history)
    assert [h["epoch"] for h in fit_resumed.history] == [1, 2, 3, 4]
    assert without_seconds([fit_straight.selected]) == without_seconds([fit_resumed.selected])
    last_a = load_checkpoint(tmp_path / "straight" / "last.pt")
    last_b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert last_a["step"] == last_b["step"] == 4 * steps_per_epoch
    assert last_a["numpy_rng"] == last_b["numpy_rng"]
    # the parameters moved: the check above is not comparing two untouched models
    torch.manual_seed(0)
    fresh = build_model("lightgcn", ds, {"dim": 8, "layers": 2})
    assert not torch.equal(fresh.user_emb, straight.user_emb)


def test_resume_refuses_another_dataset(tmp_path):
    lightgcn_run(make_dataset(0), tmp_path, 1, init_seed=0)
    with pytest.raises(ValueError, match="different dataset"):
        lightgcn_run(make_dataset(1), tmp_path, 2, init_seed=0, resume=True)


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch, error):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.arange(5.0)})
    before = path.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(type(error)):
        save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(5)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.arange(5.0))
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]


def test_atomic_json_handles_numpy_values(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"hr": np.float32(0.5), "ranks": np.arange(3)})
    assert yaml.safe_load(path.read_text()) == {"hr": 0.5, "ranks": [0, 1, 2]}


# ---------------------------------------------------------------------------------------------- config
def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="unknown key lrr"):
        from_dict(TrainConfig, {"lrr": 0.1})
    with pytest.raises(ConfigError, match=r"unknown key train\.hmg\.relaxx"):
        from_dict(RunConfig, {"train": {"hmg": {"relaxx": 0.5}}})
    with pytest.raises(ConfigError, match=r"unknown key params\.dimm"):
        build_model("lightgcn", make_dataset(), {"dimm": 8})


@pytest.mark.parametrize("data, message", [
    ({"epochs": "ten"}, "epochs: expected an integer"),
    ({"epochs": 2.5}, "epochs: expected an integer"),
    ({"lr": "fast"}, "lr: expected a number"),
    ({"progress": "yes"}, "progress: expected true/false"),
    ({"protocol": "best"}, "protocol: 'best' is not one of"),
    ({"ks": [10, "x"]}, r"ks\[1\]: expected an integer"),
    ({"decay_steps": "often"}, "decay_steps: expected an integer"),
    ({"epochs": 0}, "train.epochs must be >= 1"),
    ({"select_metric": "AUC"}, "select_metric 'AUC'"),
    ({"select_metric": "HR@20", "ks": [10, 50]}, r"select_metric 'HR@20'.*K in train\.ks \[10, 50\]"),
    ({"select_metric": "NDCG@ten"}, "select_metric 'NDCG@ten'"),
])
def test_type_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, data)


def test_values_are_coerced_to_their_types():
    cfg = from_dict(TrainConfig, {"epochs": 3.0, "lr": 1, "ks": 10, "decay_steps": None})
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.ks == [10] and cfg.decay_steps is None
    assert from_dict(TrainConfig, {"select_metric": "MRR"}).select_metric == "MRR"
    assert from_dict(TrainConfig, {"select_metric": "NDCG@20", "ks": [20]}).ks == [20]


def test_overrides(tmp_path):
    base = {"model": "lightgcn", "train": {"lr": 0.001, "epochs": 5}}
    out = apply_overrides(base, ["train.lr=0.01", "train.hmg.strategy=A", "params.dim=16",
                                 "train.patience=null", "train.ks=[5, 20]"])
    assert out == {"model": "lightgcn", "params": {"dim": 16},
                   "train": {"lr": 0.01, "epochs": 5, "hmg": {"strategy": "A"}, "patience": None,
                             "ks": [5, 20]}}
    assert base == {"model": "lightgcn", "train": {"lr": 0.001, "epochs": 5}}  # the input is not modified
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(base, ["train.lr"])
    with pytest.raises(ConfigError, match="lr is not a section"):
        apply_overrides(base, ["train.lr.value=1"])

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(base))
    cfg = load_run_config(path, ["train.epochs=7", "train.hmg.strategy=B", "data.validation=holdout"])
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.001 and cfg.train.hmg.strategy == "B"
    assert cfg.data.validation == "holdout"
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_run_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"unknown key train\.epoch "):
        load_run_config(path, ["train.epoch=3"])


def test_shipped_configs_are_valid():
    from mbrec.models.base import model_class

    folder = os.path.join(os.path.dirname(__file__), "..", "configs")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert names
    for name in names:
        cfg = load_run_config(os.path.join(folder, name))
        from_dict(model_class(cfg.model).Config, cfg.params, prefix="params")
        assert math.isfinite(cfg.train.lr)


def test_optimizer_choice_builds_the_named_optimizer():
    from mbrec.train.trainer import make_optimizer

    p = [torch.nn.Parameter(torch.ones(3))]
    adam = make_optimizer(TrainConfig(), p)
    ada = make_optimizer(TrainConfig(optimizer="adagrad", lr=0.05, adagrad_initial_accumulator=1e-8), p)
    assert isinstance(adam, torch.optim.Adam) and isinstance(ada, torch.optim.Adagrad)
    assert ada.defaults["initial_accumulator_value"] == 1e-8 and ada.defaults["lr"] == 0.05
    # one Adagrad step on a unit gradient moves by lr (accumulator ≈ 1 after the first step)
    p[0].grad = torch.ones(3)
    ada.step()
    assert torch.allclose(p[0].detach(), torch.full((3,), 1 - 0.05), atol=1e-6)


def test_monitor_evaluations_change_nothing_but_the_log(tmp_path):
    """monitor_every adds evaluations between scheduled ones; they are logged and kept apart, and the
    trained weights, history and selection equal those of the same run without them (MBSSL: dropout
    draws from torch's RNG, so an evaluation that touched the RNG would change the weights)."""
    import json

    ds = make_dataset(with_valid=True)
    params = {"dim": 8, "layers": 2, "attention_dim": 4, "swing_cache": False, "fn_users": 2, "fn_items": 2}
    runs = {}
    for monitor_every in (0, 1):
        torch.manual_seed(0)
        model = build_model("mbssl", ds, params)
        cfg = TrainConfig(epochs=4, batch_size=16, lr=0.01, eval_every=3, protocol="validation", ks=[10],
                          seed=3, progress=False, monitor_every=monitor_every)
        run_dir = tmp_path / f"m{monitor_every}"
        runs[monitor_every] = (model, Trainer(model, ds, cfg, run_dir, log=quiet).fit(), run_dir)
    (plain, fit_plain, _), (watched, fit_watched, run_dir) = runs[0], runs[1]
    for (name, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert without_seconds(fit_plain.history) == without_seconds(fit_watched.history)
    assert [h["epoch"] for h in fit_watched.history] == [3, 4] and fit_plain.monitor == []
    assert [m["epoch"] for m in fit_watched.monitor] == [1, 2]
    assert all(m["monitor"] and "test" in m and "valid" in m for m in fit_watched.monitor)
    assert fit_plain.selected["epoch"] == fit_watched.selected["epoch"]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e.get("monitor", False)) for e in logged] == [(1, True), (2, True), (3, False),
                                                                        (4, False)]
    assert load_checkpoint(run_dir / "last.pt")["monitor"] == fit_watched.monitor
    with pytest.raises(ConfigError, match="monitor_every"):
        TrainConfig(monitor_every=-1).validate()
