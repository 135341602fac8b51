"""AdaptiveSelection: the budget schedule, the importance formulas, and fits with a real
``lightning.pytorch.Trainer`` on a tiny T5 (removal, identity, freezing, merge, gradient
accumulation, resume, checkpoint choice, the picture)."""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from hadamard_lit.adapters import (
    HUT,
    IA3,
    AdaDHP,
    FullFineTuning,
    HadamardAdapter,
    LoRA,
    adapter_layers,
)
from hadamard_lit.callbacks import (
    AdaptiveSelection,
    SelectionAwareCheckpoint,
    cubic_budget,
    plot_selection,
)
from hadamard_lit.callbacks.selection_plot import module_grid
from helpers.selection_case import NUM_T5_MODULES, TinySeq2Seq, loader, tiny_t5

torch.set_num_threads(1)


def closed_form(t: int, total: int, target: int, t_init: int, t_final: int) -> int:
    """METHODS.md §1, in exact rationals."""
    if t <= t_init:
        return total
    if t > t_final:
        return target
    return target + math.floor((total - target) * Fraction(t_final - t, t_final - t_init) ** 3)


def trainer(root: Path, selection: AdaptiveSelection | None, **kwargs: Any) -> pl.Trainer:
    callbacks = kwargs.pop("callbacks", [])
    settings: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    settings.update(kwargs)
    return pl.Trainer(callbacks=[*([selection] if selection else []), *callbacks], **settings)


def adapter_values(module: TinySeq2Seq) -> dict[str, torch.Tensor]:
    assert module.model is not None
    return {
        f"{name}.{local}": p.detach().clone()
        for name, layer in adapter_layers(module.model).items()
        for local, p in layer.adapter_parameters().items()
    }


# -- the schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "target", "t_init", "t_final"),
    [
        (32, 8, 2, 10),
        (192, 96, 100, 920),
        (192, 96, 80, 400),
        (7, 1, 0, 3),
        (50, 49, 5, 6),
        (10, 3, 3, 10),
    ],
)
def test_budget_equals_closed_form_at_every_step(total, target, t_init, t_final) -> None:
    for t in range(0, t_final + 20):
        assert cubic_budget(t, total, target, t_init, t_final) == closed_form(
            t, total, target, t_init, t_final
        ), t


@pytest.mark.parametrize(
    ("target", "t_init", "t_final", "delta_t"),
    [(8, 2, 10, 3), (8, 0, 7, 1), (0.25, 5, 26, 4), (31, 1, 2, 5), (1, 3, 20, 20)],
)
def test_callback_budget_and_selection_steps(target, t_init, t_final, delta_t) -> None:
    model = tiny_t5()
    AdaDHP().apply(model)
    selection = AdaptiveSelection(target, t_init, t_final, delta_t, plot=False)
    selection.attach(model)
    n_t = target if isinstance(target, int) else round(target * NUM_T5_MODULES)
    assert selection.num_modules == NUM_T5_MODULES and selection.target_count == n_t
    for t in range(0, t_final + 10):
        assert selection.budget(t) == closed_form(t, NUM_T5_MODULES, n_t, t_init, t_final)
        expected = t_init < t <= t_final and ((t - t_init) % delta_t == 0 or t == t_final)
        assert selection.is_selection_step(t) == expected
    assert selection.is_selection_step(t_final)


def random_grads(model: nn.Module, g: torch.Generator, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for name, layer in adapter_layers(model).items():
        for p in layer.adapter_parameters().values():
            p.grad = None if name in skip else torch.randn(p.shape, generator=g) * 0.1


def test_importance_and_scores_equal_the_formulas() -> None:
    model = tiny_t5()
    AdaDHP().apply(model)
    layers = adapter_layers(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # values away from 1, so θ matters
        for layer in layers.values():
            for p in layer.adapter_parameters().values():
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    beta1, beta2 = 0.7, 0.9
    selection = AdaptiveSelection(4, t_init=100, t_final=200, beta1=beta1, beta2=beta2)
    selection.attach(model)
    silent = "decoder.block.1.layer.0.SelfAttention.q"  # gets no gradient: importance 0
    ema_i: dict[str, torch.Tensor] = {}
    ema_u: dict[str, torch.Tensor] = {}
    for step in range(1, 5):
        random_grads(model, g, skip={silent})
        with torch.no_grad():  # an optimizer would move θ between steps
            for layer in layers.values():
                for p in layer.adapter_parameters().values():
                    p.mul_(1 + 0.01 * step)
        assert selection.update(step) == []
        expected_scores = {}
        for name, layer in layers.items():
            s_sum, count = 0.0, 0
            for local, p in layer.adapter_parameters().items():
                key = f"{name}.{local}"
                grad = torch.zeros_like(p) if p.grad is None else p.grad
                imp = (p.detach().double() * grad.double()).abs()
                prev_i = ema_i.get(key, torch.zeros_like(imp))
                prev_u = ema_u.get(key, torch.zeros_like(imp))
                ema_i[key] = beta1 * prev_i + (1 - beta1) * imp
                ema_u[key] = beta2 * prev_u + (1 - beta2) * (imp - ema_i[key]).abs()
                s_sum += float((ema_i[key] * ema_u[key]).sum())
                count += p.numel()
            expected_scores[name] = s_sum / count
        state = selection.state_dict()
        for key in ema_i:
            torch.testing.assert_close(
                state["importance"][key].double(), ema_i[key], rtol=1e-5, atol=1e-12
            )
            torch.testing.assert_close(
                state["uncertainty"][key].double(), ema_u[key], rtol=1e-5, atol=1e-12
            )
        assert selection.scores.keys() == expected_scores.keys()
        for name, score in selection.scores.items():
            assert score == pytest.approx(expected_scores[name], rel=1e-5, abs=1e-15), name
    assert selection.scores[silent] == 0.0


def test_removes_exactly_the_lowest_with_ties_in_module_order() -> None:
    model = tiny_t5()
    AdaDHP().apply(model)
    names = list(adapter_layers(model))
    selection = AdaptiveSelection(10, t_init=0, t_final=2, delta_t=1)
    selection.attach(model)
    # Step 1: no gradients at all, so every score is 0: the first modules in model order go.
    removed = selection.update(1)
    first = cubic_budget(1, 32, 10, 0, 2)
    assert removed == names[: 32 - first]
    assert selection.active_modules == names[32 - first :]
    assert all(selection.removed_modules[n] == 1 for n in removed)
    # Step 2: the higher the module index, the larger its gradient; t_final leaves exactly 10.
    for i, name in enumerate(names):
        for p in adapter_layers(model)[name].adapter_parameters().values():
            p.grad = torch.full_like(p, float(i + 1))
    removed = selection.update(2)
    assert selection.active_modules == names[-10:]
    assert removed == names[32 - first : 22]
    assert selection.done
    # Later steps change nothing and removed layers stay frozen identity.
    assert selection.update(3) == []
    for name in selection.removed_modules:
        for p in adapter_layers(model)[name].adapter_parameters().values():
            assert not p.requires_grad and p.grad is None and bool((p == 1).all())


@pytest.mark.parametrize(
    "strategy",
    [
        lambda: LoRA(rank=2),
        lambda: HUT(rank=2),
        lambda: IA3(),
        lambda: HadamardAdapter(),
    ],
    ids=["lora", "hut", "ia3", "hadamard_adapter"],
)
def test_every_strategy_unit_is_a_module(strategy) -> None:
    model = tiny_t5()
    original = copy.deepcopy(model)
    strategy().apply(model)
    layers = adapter_layers(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # trained-looking adapters, so a reset is visible
        for layer in layers.values():
            for p in layer.adapter_parameters().values():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    selection = AdaptiveSelection(0.5, t_init=1, t_final=3, delta_t=1)
    selection.attach(model)
    for step in range(1, 5):
        random_grads(model, g)
        selection.update(step)
    n_t = round(len(layers) * 0.5)
    assert len(selection.active_modules) == n_t
    assert len(selection.removed_modules) == len(layers) - n_t
    for name in selection.removed_modules:
        weight, bias = layers[name].merged_weight_and_bias()
        base = original.get_submodule(name)
        torch.testing.assert_close(weight, base.weight, rtol=0, atol=0)
        if bias is not None:
            torch.testing.assert_close(bias, base.bias, rtol=0, atol=0)


# -- clear errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(target=8, t_init=10, t_final=10), "t_final must be > t_init"),
        (dict(target=8, t_init=10, t_final=3), "t_final must be > t_init"),
        (dict(target=8, t_init=0, t_final=3, delta_t=0), "delta_t must be >= 1"),
        (dict(target=0, t_init=0, t_final=3), "target must be >= 1"),
        (dict(target=-3, t_init=0, t_final=3), "target must be >= 1"),
        (dict(target=1.5, t_init=0, t_final=3), r"fraction in \(0, 1\)"),
        (dict(target=0.0, t_init=0, t_final=3), r"fraction in \(0, 1\)"),
        (dict(target=8, t_init=-1, t_final=3), "t_init must be >= 0"),
        (dict(target=8, t_init=0, t_final=3, beta1=1.0), r"beta1 must be in \[0, 1\)"),
        (dict(target=8, t_init=0.5, t_final=0.2), "t_final must be > t_init"),
        (dict(target=8, t_init=1.0, t_final=3), r"t_init=1.0 .* fraction in \[0, 1\)"),
        (dict(target=8, t_init=0, t_final=1.5), r"t_final=1.5 .* fraction in \(0, 1\]"),
        (dict(target=8, t_init=0, t_final=3, delta_t=0.0), r"delta_t=0.0 .* fraction"),
        (dict(target=8, t_init=0, t_final="10"), "t_final must be an int .* or a float"),
    ],
)
def test_bad_settings(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        AdaptiveSelection(**kwargs)


@pytest.mark.parametrize(
    ("target", "shown"), [(32, "n_T=32"), (40, "n_T=40"), (0.999, "n_T=32"), (0.001, "n_T=0")]
)
def test_target_against_the_model(target, shown) -> None:
    model = tiny_t5()
    AdaDHP().apply(model)
    with pytest.raises(ValueError, match=f"{shown}.*< the 32 adapted modules"):
        AdaptiveSelection(target, 0, 3).attach(model)


def test_no_adapter_strategy() -> None:
    with pytest.raises(ValueError, match="no adapter strategy applied"):
        AdaptiveSelection(8, 0, 3).attach(tiny_t5())
    model = tiny_t5()
    FullFineTuning().apply(model)
    with pytest.raises(ValueError, match="injects no adapter layers"):
        AdaptiveSelection(8, 0, 3).attach(model)


def test_no_adapter_strategy_in_a_fit(tmp_path) -> None:
    class Plain(TinySeq2Seq):
        def configure_model(self) -> None:
            if self.model is None:
                self.model = tiny_t5()

    selection = AdaptiveSelection(8, 0, 3)
    with pytest.raises(ValueError, match="no adapter strategy applied"):
        trainer(tmp_path, selection, max_steps=4).fit(Plain(), loader(4))


def test_t_final_beyond_training(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"t_final=9 is beyond the trainer's max_steps=8"):
        trainer(tmp_path, AdaptiveSelection(8, 2, 9), max_steps=8).fit(TinySeq2Seq(), loader(4))
    # 32 examples / batch 4 = 8 steps per epoch, 2 epochs with accumulation 2: 8 steps.
    fit = trainer(tmp_path, AdaptiveSelection(8, 2, 9), max_epochs=2, accumulate_grad_batches=2)
    with pytest.raises(ValueError, match=r"t_final=9 is beyond the 8 optimizer steps"):
        fit.fit(TinySeq2Seq(), loader(4))


def test_fractional_schedule_resolves_to_the_fit_length(tmp_path) -> None:
    selection = AdaptiveSelection(8, t_init=0.1, t_final=0.6, delta_t=0.05, plot=False)
    assert not selection.schedule_resolved
    with pytest.raises(RuntimeError, match="fractions of the fit's optimizer steps"):
        _ = selection.t_final
    # 40 steps: t_init 4, t_final 24, delta_t 2, exactly as if given in steps.
    fit = trainer(tmp_path, selection, max_steps=40)
    fit.fit(TinySeq2Seq(), loader(4))
    assert (selection.t_init, selection.t_final, selection.delta_t) == (4, 24, 2)
    assert selection.done and len(selection.active_modules) == 8
    steps = AdaptiveSelection(8, t_init=4, t_final=24, delta_t=2, plot=False)
    trainer(tmp_path, steps, max_steps=40).fit(TinySeq2Seq(), loader(4))
    assert steps.removed_modules == selection.removed_modules


def test_fractional_schedule_needs_a_known_length_and_a_window(tmp_path) -> None:
    tiny = AdaptiveSelection(8, t_init=0.5, t_final=0.51, plot=False)
    with pytest.raises(ValueError, match=r"gives t_init=2 and t_final=2 .* fit of 4 steps"):
        trainer(tmp_path, tiny, max_steps=4).fit(TinySeq2Seq(), loader(4))
    assert AdaptiveSelection(8, 2, 0.5).resolve_schedule(100) == (2, 50, 1)


# -- fits with a real Trainer --------------------------------------------------------------


class Recorder(Callback):
    """After every optimizer step: the number of active modules and every adapter value."""

    def __init__(self, selection: AdaptiveSelection) -> None:
        self.selection = selection
        self.active: dict[int, int] = {}
        self.values: dict[int, dict[str, torch.Tensor]] = {}
        self.grads_of_removed: list[str] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Runs after AdaptiveSelection's hook (callbacks run in order): nothing removed may
        # still have a gradient or optimizer state when the optimizer steps.
        layers = adapter_layers(pl_module.model)
        for name in self.selection.removed_modules:
            for p in layers[name].adapter_parameters().values():
                if p.grad is not None or p in optimizer.state or p.requires_grad:
                    self.grads_of_removed.append(name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.active[step] = len(self.selection.active_modules)
        self.values[step] = adapter_values(pl_module)


def test_fit_prunes_to_target_and_freezes_identity(tmp_path) -> None:
    selection = AdaptiveSelection(target=8, t_init=2, t_final=8, delta_t=3)
    recorder = Recorder(selection)
    module = TinySeq2Seq(weight_decay=0.1)
    fit = trainer(tmp_path, selection, max_steps=14, callbacks=[recorder], logger=True)
    fit.fit(module, loader(4))

    assert len(selection.active_modules) == 8 and selection.done
    assert sorted(set(selection.removed_modules.values())) == [5, 8]
    # After every optimizer step, the budget of the last selection step.
    last_selection = 0
    for step in range(1, 15):
        if selection.is_selection_step(step):
            last_selection = step
        assert recorder.active[step] == selection.budget(last_selection), step
    assert recorder.grads_of_removed == []
    # Removed: exactly identity from the step of removal on, through AdamW's weight decay.
    for name, removed_at in selection.removed_modules.items():
        for step in range(removed_at, 15):
            for local in ("row_scale", "col_scale"):
                assert bool((recorder.values[step][f"{name}.{local}"] == 1).all()), (name, step)
    # Kept ones kept training after t_final.
    moved = [
        key
        for key in recorder.values[14]
        if key.rpartition(".")[0] in selection.active_modules
        and not torch.equal(recorder.values[14][key], recorder.values[8][key])
    ]
    assert len(moved) == 16
    # Merged equals unmerged for the pruned model.
    model = module.model
    assert model is not None
    ids = torch.randint(2, 64, (3, 8), generator=torch.Generator().manual_seed(5))
    labels = torch.randint(2, 64, (3, 4), generator=torch.Generator().manual_seed(6))
    model.eval()
    with torch.no_grad():
        unmerged = model(input_ids=ids, labels=labels).logits
        merged_model = AdaDHP().merge(copy.deepcopy(model))
        merged = merged_model(input_ids=ids, labels=labels).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-6)
    # Logged read-outs and the picture beside the logs.
    metrics = fit.callback_metrics
    assert metrics["selection/active"].item() == 8 and metrics["selection/done"].item() == 1
    assert {"selection/score_min", "selection/score_median", "selection/score_max"} <= set(metrics)
    assert selection.plot_path == Path(fit.log_dir) / "adaptive_selection.png"  # type: ignore[arg-type]
    assert selection.plot_path.stat().st_size > 10_000


def test_gradient_accumulation_gives_the_same_removal_steps(tmp_path) -> None:
    runs = {}
    for batch, accumulate in ((8, 1), (2, 4)):
        selection = AdaptiveSelection(target=2, t_init=1, t_final=7, delta_t=2, plot=False)
        fit = trainer(
            tmp_path / str(accumulate), selection, max_steps=9, accumulate_grad_batches=accumulate
        )
        fit.fit(TinySeq2Seq(), loader(batch, n=72))
        assert fit.global_step == 9
        runs[accumulate] = selection
    one, four = runs[1], runs[4]
    assert sorted(set(one.removed_modules.values())) == [3, 5, 7]
    assert one.removed_modules == four.removed_modules
    for name, score in one.scores.items():
        assert four.scores[name] == pytest.approx(score, rel=1e-3), name


def test_resume_mid_pruning_equals_continuous(tmp_path) -> None:
    settings = dict(target=2, t_init=2, t_final=11, delta_t=3, plot=False)
    # 20 examples / batch 4: 5 optimizer steps per epoch; selections at steps 5, 8 and 11.
    data = dict(batch_size=4, n=20)

    selection = AdaptiveSelection(**settings)  # type: ignore[arg-type]
    # Saved on a step count, at the epoch's last batch. (A checkpoint written at train-epoch
    # end, with no validation, makes Lightning replay one batch when resumed.)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=5, save_top_k=-1)
    continuous = TinySeq2Seq()
    trainer(
        tmp_path / "a", selection, max_steps=14, callbacks=[saver], enable_checkpointing=True
    ).fit(continuous, loader(**data))
    mid = tmp_path / "ckpt" / "epoch=1-step=10.ckpt"  # after the selections at 5 and 8, before 11
    assert mid.exists(), sorted(p.name for p in (tmp_path / "ckpt").iterdir())

    resumed_selection = AdaptiveSelection(**settings)  # type: ignore[arg-type]
    resumed = TinySeq2Seq()
    trainer(tmp_path / "b", resumed_selection, max_steps=14).fit(
        resumed, loader(**data), ckpt_path=mid
    )

    assert resumed_selection.removed_modules == selection.removed_modules
    assert sorted(set(selection.removed_modules.values())) == [5, 8, 11]
    assert resumed_selection.scores == pytest.approx(selection.scores, rel=1e-6)
    final, again = adapter_values(continuous), adapter_values(resumed)
    for key in final:
        torch.testing.assert_close(again[key], final[key], rtol=0, atol=0)


def test_resumed_removals_are_frozen_again(tmp_path) -> None:
    settings = dict(target=8, t_init=1, t_final=4, delta_t=1, plot=False)
    selection = AdaptiveSelection(**settings)  # type: ignore[arg-type]
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    trainer(tmp_path, selection, max_steps=4, callbacks=[saver], enable_checkpointing=True).fit(
        TinySeq2Seq(), loader(4)
    )
    seen: dict[str, Any] = {}

    class Probe(Callback):  # runs after AdaptiveSelection's on_train_start
        def on_train_start(self, trainer, pl_module) -> None:
            layers = adapter_layers(pl_module.model)
            optimizer = trainer.optimizers[0]
            for name in again.removed_modules:
                for p in layers[name].adapter_parameters().values():
                    seen[name] = (p.requires_grad, bool((p == 1).all()), p in optimizer.state)

    again = AdaptiveSelection(**settings)  # type: ignore[arg-type]
    ckpt = tmp_path / "ckpt" / "epoch=0-step=3.ckpt"
    trainer(tmp_path / "b", again, max_steps=4, callbacks=[Probe()]).fit(
        TinySeq2Seq(), loader(4), ckpt_path=ckpt
    )
    before = {n for n, s in selection.removed_modules.items() if s <= 3}
    assert before and set(seen) == before
    assert all(v == (False, True, False) for v in seen.values()), seen
    assert again.removed_modules == selection.removed_modules


def test_selection_aware_checkpoint_keeps_no_mid_pruning_best(tmp_path) -> None:
    selection = AdaptiveSelection(target=8, t_init=2, t_final=8, delta_t=2, plot=False)
    best = SelectionAwareCheckpoint(
        dirpath=tmp_path / "best",
        monitor="train_loss",
        mode="min",
        every_n_train_steps=1,
        save_top_k=2,
    )
    plain = ModelCheckpoint(
        dirpath=tmp_path / "plain",
        monitor="train_loss",
        mode="min",
        every_n_train_steps=1,
        save_top_k=2,
    )
    fit = trainer(
        tmp_path, selection, max_steps=12, callbacks=[best, plain], enable_checkpointing=True
    )
    fit.fit(TinySeq2Seq(), loader(4))
    steps = sorted(int(p.stem.rpartition("step=")[2]) for p in (tmp_path / "best").iterdir())
    assert len(steps) == 2 and min(steps) >= 8, steps
    assert best.best_model_path and int(Path(best.best_model_path).stem.rpartition("=")[2]) >= 8
    # The plain one may keep any step: here the loss is lowest... wherever it is.
    assert len(list((tmp_path / "plain").iterdir())) == 2


def test_selection_aware_checkpoint_without_selection_is_plain(tmp_path) -> None:
    best = SelectionAwareCheckpoint(dirpath=tmp_path, monitor="train_loss", save_top_k=1)
    trainer(tmp_path, None, max_steps=2, callbacks=[best], enable_checkpointing=True).fit(
        TinySeq2Seq(), loader(4)
    )
    assert best.best_model_path  # ranked from the first step: nothing to wait for


# -- the picture ---------------------------------------------------------------------------


def test_module_grid_names() -> None:
    rows, cols, cells = module_grid(
        [
            "encoder.block.0.layer.0.SelfAttention.q",
            "encoder.block.1.layer.1.DenseReluDense.wo",
            "decoder.block.10.layer.1.EncDecAttention.k",
            "decoder.block.2.layer.0.SelfAttention.q",
        ]
    )
    assert rows == ["0", "1", "2", "10"]
    assert cols == [
        "encoder/SelfAttention.q",
        "encoder/DenseReluDense.wo",
        "decoder/EncDecAttention.k",
        "decoder/SelfAttention.q",
    ]
    assert cells["decoder.block.10.layer.1.EncDecAttention.k"] == (3, 2)
    rows, cols, _ = module_grid(
        [
            "bert.encoder.layer.0.attention.self.query",
            "bert.encoder.layer.3.output.dense",
            "pooler.dense",
        ]
    )
    assert rows == ["0", "3", "-"] and cols == [
        "attention.self.query",
        "output.dense",
        "pooler.dense",
    ]
    rows, cols, _ = module_grid(["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"])
    assert rows == ["0", "1"] and cols == ["attn.c_attn"]


def test_plot_without_a_trainer(tmp_path) -> None:
    model = tiny_t5()
    AdaDHP().apply(model)
    selection = AdaptiveSelection(8, 1, 4)
    selection.attach(model)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 6):
        random_grads(model, g)
        selection.update(step)
    path = plot_selection(selection, tmp_path / "sub" / "selection.png", last_step=5)
    assert path.stat().st_size > 10_000


def test_options_from_yaml() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[Callback])
    config = parser.parse_string(
        """
callbacks:
  - class_path: hadamard_lit.callbacks.AdaptiveSelection
    init_args: {target: 96, t_init: 100, t_final: 920, delta_t: 10}
  - class_path: hadamard_lit.callbacks.AdaptiveSelection
    init_args: {target: 0.5, t_init: 50, t_final: 250, beta1: 0.9}
  - class_path: hadamard_lit.callbacks.SelectionAwareCheckpoint
    init_args: {monitor: val_acc, mode: max}
"""
    )
    counted, fraction, best = parser.instantiate_classes(config).callbacks
    assert isinstance(counted, AdaptiveSelection) and counted.target == 96
    assert isinstance(counted.target, int) and (
        counted.t_init,
        counted.t_final,
        counted.delta_t,
    ) == (100, 920, 10)
    assert isinstance(fraction.target, float) and fraction.target == 0.5 and fraction.beta1 == 0.9
    assert isinstance(best, SelectionAwareCheckpoint) and best.monitor == "val_acc"
