"""The one training engine (siren_bench/trainer.py): its schedule, its accumulated update, its
log, and resumption of every kind of state it keeps. Each model's own resumption and
determinism tests (tests/test_siren.py, test_codecs.py, test_smoke_evaluators.py, test_align.py,
test_crash_safety.py) run through it too."""

from __future__ import annotations

import math

import pytest
import torch

from siren_bench.trainer import STATE_FORMAT, TIMING, Trainer, live_folder, rank_step_seed, warmup_cosine
from siren_bench.weights import CheckpointError


def test_learning_rate_warms_up_then_decays_to_the_floor():
    factors = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1) and warmup_cosine(500, 100, 10, 0.1) == pytest.approx(0.1)


def test_under_ddp_only_a_steps_last_micro_batch_reduces_gradients():
    """With DistributedDataParallel wrapped (`synced`), the micro-batches before the last run their
    forward and backward under no_sync, so the ranks all-reduce once per step. (The 2-rank gloo
    test in test_siren.py, grad_accum 2, checks the result still equals one process.)"""
    import contextlib

    model, x, y = _regression()
    trainer = _trainer(model, steps=1, grad_accum=3)
    seen, inside = [], []

    class Wrapped:
        @contextlib.contextmanager
        def no_sync(self):
            inside.append(True)
            yield
            inside.pop()

    trainer.synced = Wrapped()

    def micro():
        seen.append(("forward", bool(inside)))
        out = model(x)
        out.register_hook(lambda grad: seen.append(("backward", bool(inside))))
        return ((out[:, 0] - y) ** 2).mean(), {}

    trainer.update(micro)
    assert seen == [("forward", True), ("backward", True)] * 2 + [("forward", False), ("backward", False)]


def test_a_floor_of_one_is_warm_up_then_constant():
    assert [warmup_cosine(s, 10, 3, 1.0) for s in range(6)] == [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]
    assert [warmup_cosine(s, 10, 0, 0.5) for s in (0, 10)] == [1.0, 0.5]


def _regression(seed: int = 0):
    torch.manual_seed(seed)
    x, y = torch.randn(32, 3), torch.randn(32)
    model = torch.nn.Linear(3, 1)
    return model, x, y


def _trainer(model, tmp_path=None, **overrides) -> Trainer:
    settings = dict(steps=8, grad_clip=10.0, checkpoint_every=3, stream=[0, 1], state_file=None, warmup_steps=2,
                    min_lr_ratio=0.1) | overrides
    return Trainer("test", model, torch.optim.SGD(model.parameters(), lr=0.1), **settings)


def test_accumulated_micro_batches_make_the_full_batch_step():
    """Two half-batch micro-batches of a mean loss, each divided by 2, give the full batch's gradient."""
    full_model, x, y = _regression()
    half_model, _, _ = _regression()
    full = _trainer(full_model, steps=1)
    row_full = full.update(lambda: (((full_model(x)[:, 0] - y) ** 2).mean(), {"n": 32.0}))
    halves = iter([slice(0, 16), slice(16, 32)])
    half = _trainer(half_model, steps=1, grad_accum=2)

    def micro():
        rows = next(halves)
        return ((half_model(x[rows])[:, 0] - y[rows]) ** 2).mean(), {"n": 16.0}

    row_half = half.update(micro)
    assert row_half["loss"] == pytest.approx(row_full["loss"]) and row_half["n"] == 16.0  # logged numbers are means
    assert row_half["grad_norm"] == pytest.approx(row_full["grad_norm"])
    for a, b in zip(full_model.parameters(), half_model.parameters()):
        assert torch.allclose(a, b, atol=1e-7)


def test_clipping_bounds_the_step_and_logs_the_norm_before_it():
    model, x, y = _regression()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(model, grad_clip=1e-3)
    row = trainer.update(lambda: (((model(x)[:, 0] - y - 100.0) ** 2).mean(), {}))
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert row["grad_norm"] > 1.0 and float(moved.norm()) == pytest.approx(lr * 1e-3, rel=1e-4)


def _fit(model, x, y, trainer: Trainer, stop_after=None):
    def step():
        rows = torch.from_numpy(trainer.rng.integers(0, len(x), size=8))
        return trainer.update(lambda: (((model(x[rows])[:, 0] - y[rows]) ** 2).mean(), {}))

    return trainer.fit(step, stop_after, measure=lambda n: {"measured_at": n})


def test_the_log_records_the_learning_rate_each_step_used():
    model, x, y = _regression()
    log = _fit(model, x, y, _trainer(model))
    assert [r["step"] for r in log] == list(range(1, 9)) and [r["measured_at"] for r in log] == list(range(1, 9))
    assert [r["lr"] for r in log] == pytest.approx([0.1 * warmup_cosine(s, 8, 2, 0.1) for s in range(8)])
    assert all(r["seconds"] >= 0 and r["loss"] > 0 for r in log)


def test_a_killed_run_resumes_to_the_same_numbers_with_its_extra_state(tmp_path):
    """Model, optimizer (momentum), schedule, NumPy stream, torch RNG, a generator and a tensor."""
    runs = {}
    for name, stops in (("whole", [None]), ("killed", [5, None])):
        for stop in stops:
            model, x, y = _regression()
            generator, counts = torch.Generator().manual_seed(7), torch.zeros(3)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            trainer = Trainer("test", model, optimizer, steps=8, grad_clip=10.0, checkpoint_every=3, stream=[0, 1],
                              state_file=tmp_path / f"{name}.pt", warmup_steps=2,
                              extra_state={"generator": generator, "counts": counts})

            def step():
                noise = torch.randn(len(x), generator=generator) * 0.1 + torch.randn(len(x)) * 0.1  # both RNGs
                rows = torch.from_numpy(trainer.rng.integers(0, len(x), size=8))
                counts.add_(torch.bincount(rows % 3, minlength=3))
                row = trainer.update(lambda: (((model(x[rows])[:, 0] - y[rows] - noise[rows]) ** 2).mean(), {}))
                return row | {"count0": float(counts[0])}

            log = trainer.fit(step, stop)
        runs[name] = (trainer, log, model)
    (whole, whole_log, whole_model), (killed, killed_log, killed_model) = runs["whole"], runs["killed"]
    assert killed.start == 5 and whole.start == 0
    strip = lambda log: [{k: v for k, v in r.items() if k not in TIMING} for r in log]  # noqa: E731
    assert strip(killed_log) == strip(whole_log)
    for a, b in zip(whole_model.parameters(), killed_model.parameters()):
        assert torch.equal(a, b)


def test_the_dvclive_log_holds_exactly_the_steps_taken_even_after_a_kill(tmp_path):
    """A run stopped after step 5 whose live log also holds a step 6 that a kill lost (logged,
    never checkpointed) resumes from step 5, and its live log is the uninterrupted run's."""
    tables = {}
    for name, stops in (("whole", [None]), ("killed", [5, None])):
        folder = live_folder(tmp_path / f"{name}.pt")
        for stop in stops:
            model, x, y = _regression()
            _fit(model, x, y, _trainer(model, state_file=tmp_path / f"{name}.pt"), stop)
            if stop is not None:
                with open(folder / "plots" / "metrics" / "loss.tsv", "a") as lost:
                    lost.write("6\t99.0\n")
        assert folder == tmp_path / "dvclive" / name
        metrics = folder / "plots" / "metrics"
        tables[name] = {p.relative_to(metrics).as_posix(): p.read_text() for p in metrics.rglob("*.tsv")}
    assert set(tables["whole"]) == {"loss.tsv", "lr.tsv", "grad_norm.tsv", "measured_at.tsv", "seconds.tsv"}
    assert tables["whole"]["loss.tsv"].splitlines()[0] == "step\tloss"
    assert [int(line.split("\t")[0]) for line in tables["whole"]["loss.tsv"].splitlines()[1:]] == list(range(1, 9))
    assert {k: v for k, v in tables["killed"].items() if k != "seconds.tsv"} == {
        k: v for k, v in tables["whole"].items() if k != "seconds.tsv"}


def test_a_state_file_of_another_format_is_refused_by_name(tmp_path):
    model, _, _ = _regression()
    path = tmp_path / "old.pt"
    torch.save({"expert": model.state_dict(), "step": 3}, path)  # the layout before the one engine
    with pytest.raises(CheckpointError, match=f"old.pt.*not '{STATE_FORMAT}'.*delete it"):
        _trainer(model, state_file=path)


def test_nothing_is_written_without_a_state_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, x, y = _regression()
    _fit(model, x, y, _trainer(model))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [dict(steps=-1), dict(grad_accum=0), dict(checkpoint_every=0), dict(grad_clip=0.0),
                                 dict(warmup_steps=-2)])
def test_bad_settings_are_refused(bad):
    model, _, _ = _regression()
    with pytest.raises(ValueError, match="test: steps"):
        _trainer(model, **bad)


def test_activation_checkpointing_trains_to_the_same_numbers(tmp_path):
    """With dropout on, the recomputed blocks draw the same masks: same losses, same weights; the
    blocks are really wrapped, and generation (no gradients) is untouched."""
    import copy

    from siren_bench.config import ModelConfig
    from siren_bench.models.siren import DepthBlock, TemporalBlock
    from siren_bench.models.train import train_expert
    from tests.test_siren import _token_set, tiny_config

    siren = tiny_config(dropout=0.2)
    table = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(0))
    runs = []
    for checkpointing in (False, True):
        config = ModelConfig(train_steps=4, batch_size=3, crop_frames=6, checkpoint_every=4, val_every=4, warmup_steps=1,
                             learning_rate=1e-3, activation_checkpointing=checkpointing)
        runs.append(train_expert(0, siren, config, table, _token_set(5, 8, 0), None, tmp_path / str(checkpointing), "d",
                                 torch.device("cpu")))
    plain, checkpointed = runs
    assert [r["loss"] for r in plain.log] == [r["loss"] for r in checkpointed.log]
    for key, value in plain.expert.state_dict().items():
        assert torch.equal(value, checkpointed.expert.state_dict()[key]), key
    blocks = [m for m in checkpointed.expert.modules() if isinstance(m, (TemporalBlock, DepthBlock))]
    assert blocks and all("forward" in vars(b) for b in blocks) and not any("forward" in vars(b) for b in plain.expert.modules())
    twin = copy.deepcopy(checkpointed.expert)  # the copy's blocks run their own weights, not the original's
    assert all(b.forward.__self__ is b for b in twin.modules() if isinstance(b, (TemporalBlock, DepthBlock)))
    assert all(r["frames"] > 0 and r["frames_per_s"] > 0 for r in plain.log)


def test_data_parallel_ranks_draw_their_own_torch_numbers_and_resume_to_the_same(tmp_path):
    """Under W ranks each step reseeds torch by (stream, step, rank): two ranks draw different
    noise for their rows, a resumed job draws what the uninterrupted one drew, and one process
    keeps torch's own stream (its numbers are the committed report's)."""
    def draws(rank: int, world: int, start: int = 0, steps: int = 3) -> list[float]:
        model, _, _ = _regression()
        trainer = _trainer(model, steps=steps)
        trainer.rank, trainer.world, trainer.start = rank, world, start
        torch.manual_seed(0)
        seen = []
        trainer.fit(lambda: seen.append(torch.rand(1).item()) or {"loss": 0.0})
        return seen

    rank0, rank1 = draws(0, 2), draws(1, 2)
    assert len(set(rank0) | set(rank1)) == 6  # no row noise shared between ranks or steps
    assert draws(0, 2, start=1) == rank0[1:] and draws(1, 2, start=2) == rank1[2:]  # resumed at step 2, 3
    torch.manual_seed(0)
    expected = torch.rand(3).tolist()
    assert draws(0, 1) == expected  # one process: the global stream as before
    assert rank_step_seed([0, 7], 1, 0) != rank_step_seed([0, 7], 1, 1) != rank_step_seed([0, 8], 1, 1)
