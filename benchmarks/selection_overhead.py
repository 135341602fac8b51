"""What AdaptiveSelection costs per optimizer step, as a fraction of the step time.

A random-init T5 of t5-small's shape (d_model 512, 6+6 layers, d_ff 2048; AdaDHP on all
96 matrices) trains with a real ``lightning.pytorch.Trainer`` on random tokens. Rounds
alternate a fit with the callback and one without (interleaved, so drift in machine load
hits both alike); every optimizer step is timed from batch start to batch end, the first
steps of each fit dropped. Printed:

* ``hook``: the callback's own time per step (``on_before_optimizer_step`` plus
  ``on_train_batch_end``), median, and as a fraction of the median step without it;
* ``difference``: median step with minus median step without, as a fraction (noisier:
  it also carries whatever else the machine does).

The callback updates scores on every step of the run (``t_final`` = the last step) and
removes modules every 4 steps, so this is its most expensive phase.

    python benchmarks/selection_overhead.py [--rounds 3 --steps 12 --d-model 512 ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset
from transformers import T5Config, T5ForConditionalGeneration

from hadamard_lit.adapters import AdaDHP, adapter_layers
from hadamard_lit.callbacks import AdaptiveSelection


class Module(pl.LightningModule):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = T5ForConditionalGeneration(config)
        AdaDHP().apply(self.model)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        ids, labels = batch
        return self.model(input_ids=ids, labels=labels).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


class TimedSelection(AdaptiveSelection):
    """AdaptiveSelection that times its own per-step hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hook_times: list[float] = []
        self._elapsed = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._elapsed = 0.0

    def on_before_optimizer_step(self, *args: Any) -> None:
        start = time.perf_counter()
        super().on_before_optimizer_step(*args)
        self._elapsed += time.perf_counter() - start

    def on_train_batch_end(self, *args: Any) -> None:
        start = time.perf_counter()
        super().on_train_batch_end(*args)
        self.hook_times.append(self._elapsed + time.perf_counter() - start)


def fit(
    config: T5Config, data: DataLoader, steps: int, selection: bool
) -> tuple[list[float], list[float]]:
    timer = StepTimer()
    callbacks: list[Callback] = [timer]
    timed = None
    if selection:
        timed = TimedSelection(target=0.5, t_init=2, t_final=steps, delta_t=4, plot=False)
        callbacks.insert(0, timed)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(Module(config), data)
    return timer.times, (timed.hook_times if timed is not None else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped at each fit's start")
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--d-ff", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--src-len", type=int, default=32)
    parser.add_argument("--tgt-len", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = T5Config(
        vocab_size=args.vocab,
        d_model=args.d_model,
        d_kv=args.d_model // args.heads,
        d_ff=args.d_ff,
        num_layers=args.layers,
        num_heads=args.heads,
        decoder_start_token_id=0,
        pad_token_id=0,
        dropout_rate=0.0,
    )
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    ids = torch.randint(2, args.vocab, (n, args.src_len), generator=g)
    labels = torch.randint(2, args.vocab, (n, args.tgt_len), generator=g)
    data = DataLoader(TensorDataset(ids, labels), batch_size=args.batch)

    probe = T5ForConditionalGeneration(config)
    AdaDHP().apply(probe)
    layers = adapter_layers(probe)
    numel = sum(p.numel() for layer in layers.values() for p in layer.adapter_parameters().values())
    print(
        f"T5 d_model={args.d_model} d_ff={args.d_ff} layers={args.layers}+{args.layers}: "
        f"{len(layers)} AdaDHP matrices, {numel:,} adapter parameters; batch {args.batch} x "
        f"{args.src_len}/{args.tgt_len} tokens; {args.threads} threads"
    )
    del probe

    with_steps: list[float] = []
    without_steps: list[float] = []
    hooks: list[float] = []
    for r in range(args.rounds):
        for selection in (r % 2 == 0, r % 2 == 1):  # alternate which goes first
            times, hook_times = fit(config, data, args.steps, selection)
            (with_steps if selection else without_steps).extend(times[args.warmup :])
            hooks.extend(hook_times[args.warmup :])
        print(f"round {r + 1}/{args.rounds} done")

    base = statistics.median(without_steps)
    with_ = statistics.median(with_steps)
    hook = statistics.median(hooks)
    print(f"median step without the callback: {base * 1e3:8.1f} ms ({len(without_steps)} steps)")
    print(f"median step with the callback:    {with_ * 1e3:8.1f} ms ({len(with_steps)} steps)")
    print(f"hook:       {hook * 1e3:8.2f} ms per step = {hook / base:.2%} of a step")
    print(
        f"difference: {(with_ - base) * 1e3:8.2f} ms per step = {(with_ - base) / base:+.2%} of a step"
    )


if __name__ == "__main__":
    main()
