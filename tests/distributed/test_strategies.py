"""Adapter training under DDP, FSDP2 and DeepSpeed ZeRO-2/3 with 2 CPU processes (gloo).

Every run trains the same tiny BERT folder (AdaDHP, SST-2 rows from ``../shared/data``,
no dropout, constant learning rate) for 2 epochs of 4 steps, 4 rows per rank. The
single-process reference trains on exactly the same global batches (``GlobalBatchesNLU``:
Lightning's ``DistributedSamplerWrapper`` re-shuffles positions, so plain batch-8 runs would
see other rows), so each run's checkpoint must hold the reference's adapter state: the
same keys and shapes, whole tensors, values within float tolerance. A probe callback checks
on every rank that the frozen backbone is bit-identical after training and every trained
tensor moved. DDP and FSDP2 run through ``python -m hadamard_lit fit`` (FSDP2 stops after
one epoch and resumes), DeepSpeed through the test-only CPU strategy (ZeRO-2/3, stopping
after 4 steps and resuming). Each checkpoint then loads back and exports.

The GPU paths (Lightning's ``fsdp``, ``deepspeed_stage_2/3``, ``bf16``) are the same CLI
runs with the CUDA-only config fragments; they skip without a CUDA device.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForSequenceClassification

from hadamard_lit.adapters import adapter_state_dict
from hadamard_lit.cli import HadamardCLI, HadamardTrainer
from hadamard_lit.modules import SequenceClassificationModule
from hadamard_lit.parallel.checkpoints import read_checkpoint
from hadamard_lit.parallel.fsdp2 import (
    data_parallel_mesh,
    fully_shard_blocks,
    is_fully_sharded,
    transformer_blocks,
)
from helpers.cli import trainer_block
from helpers.distributed import HELPERS, REPO, requires_deepspeed, run_python, run_script
from helpers.strategy_case import GLOBAL_BATCH, LR, TRAIN_ROWS, tiny_classifier
from helpers.tiny import BUILDERS, TINY_BERT

pytestmark = pytest.mark.distributed

EPOCHS = 2
STRATEGIES = REPO / "configs" / "strategy"
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA device (Lightning's fsdp, deepspeed and bf16-on-GPU paths refuse CPU)",
)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT classifier saved as a folder: every strategy loads identical weights.

    (A ``backbone_config`` model would not do: under ZeRO-3 transformers initialises
    layer by layer, gathered, which draws other random numbers than a plain build.)
    """
    config = AutoConfig.for_model(**{**TINY_BERT, "num_labels": 2})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bert")
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    return str(folder)


def run_config(
    root: Path, name: str, backbone: str, tokenizer: str, data_dir: Path, **trainer: Any
) -> Path:
    """A CLI run config (YAML file): the tiny classifier on SST-2, 4 rows per rank."""
    reference = trainer.pop("reference", False)
    data = {
        "task": "sst2",
        "shape": "classification",
        "data_dir": str(data_dir),
        "max_length": 32,
        "batch_size": GLOBAL_BATCH // 2,
        "max_train_samples": TRAIN_ROWS,
        "max_eval_samples": 16,
    }
    # test_cli's quiet CPU trainer, with the weight probe on every rank.
    probed = {
        "max_epochs": EPOCHS,
        "callbacks": [{"class_path": "helpers.strategy_case.FrozenWeightProbe"}],
        **trainer,
    }
    config = {
        "seed_everything": 0,
        "trainer": trainer_block(root, name, **probed),
        "model": {
            "class_path": "hadamard_lit.modules.SequenceClassificationModule",
            "init_args": {
                "model_name_or_path": backbone,
                "tokenizer": tokenizer,
                "adapter": {"class_path": "hadamard_lit.adapters.AdaDHP"},
                "optimizer": {
                    "class_path": "torch.optim.AdamW",
                    "init_args": {"lr": LR, "weight_decay": 0.0},
                },
                "lr_schedule": "constant",
            },
        },
        "data": {
            "class_path": (
                "helpers.strategy_case.GlobalBatchesNLU"
                if reference
                else "hadamard_lit.data.NLUDataModule"
            ),
            "init_args": {**data, **({"world_size": 2} if reference else {})},
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli_in_process(*args: str) -> HadamardCLI:
    with pytest.MonkeyPatch.context() as patch:
        # LightningCLI warns when args= comes with pytest's own command line in sys.argv.
        patch.setattr(sys, "argv", ["hadamard_lit"])
        return HadamardCLI(args=list(args))


def cli_fit(
    config: Path,
    fragment: str,
    *args: str,
    devices: int = 2,
    timeout: float = 420,
    env: dict[str, str] | None = None,
) -> None:
    """``python -m hadamard_lit fit`` on ``devices`` processes with a strategy fragment."""
    run_python(
        "-m",
        "hadamard_lit",
        "fit",
        "--config",
        str(config),
        "--config",
        str(STRATEGIES / f"{fragment}.yaml"),
        "--trainer.devices",
        str(devices),
        *args,
        timeout=timeout,
        env_overrides=env,
    )


def check_probes(run_dir: Path, world_size: int = 2) -> None:
    """Frozen weights bit-identical on every rank; every trained tensor moved."""
    for rank in range(world_size):
        probe = json.loads((run_dir / f"probe_rank{rank}.json").read_text())
        assert probe["world_size"] == world_size, probe
        assert probe["n_frozen"] > 0 and probe["frozen_names_same"], probe
        assert probe["frozen_unchanged"], f"rank {rank}: a frozen weight changed"
        assert len(probe["trained_moved"]) == probe["n_trained"] > 0, probe


def check_matches(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """The same adapter state dict as the single-process run: keys, whole shapes, values."""
    assert sorted(state) == sorted(reference)
    for key, expected in reference.items():
        got = state[key]
        assert type(got) is torch.Tensor, f"{key} is a {type(got).__name__}, not a whole tensor"
        assert got.shape == expected.shape, key
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=key)


def checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def check_loads_and_exports(
    ckpt: Path,
    module: SequenceClassificationModule,
    run_config_yaml: Path | None,
    out: Path,
    fresh: Callable[[], SequenceClassificationModule] | None = None,
) -> None:
    """``module`` (loaded from ``ckpt``) holds its adapter; ``export`` gives the same logits.

    ``export`` runs as the CLI subcommand with the run's config, or through
    ``HadamardTrainer.export`` on ``fresh()``, an untrained module of the run's kind.
    """
    state = checkpoint_state(ckpt)
    loaded = {"model." + k: v for k, v in adapter_state_dict(module.model).items()}
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    module.eval()
    batch = module.tokenizer(
        ["a gorgeous, witty film", "dull and lifeless"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        expected = module.model(**batch).logits
    if run_config_yaml is not None:  # the user's way: the run's own config
        args = (
            "--config",
            str(run_config_yaml),
            "--ckpt_path",
            str(ckpt),
            "--output_dir",
            str(out),
        )
        cli_in_process("export", *args)
    else:
        assert fresh is not None
        HadamardTrainer(accelerator="cpu", devices=1, logger=False).export(
            fresh(), ckpt_path=str(ckpt), output_dir=str(out)
        )
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, backbone: str, minilm: str, shared_data: Path
) -> dict[str, torch.Tensor]:
    """The single-process run's final adapter state (last.ckpt), on the 2-rank batches."""
    root = tmp_path_factory.mktemp("reference")
    config = run_config(root, "single", backbone, minilm, shared_data, reference=True)
    cli_in_process("fit", "--config", str(config))
    run_dir = root / "single" / "version_0"
    check_probes(run_dir, world_size=1)
    return checkpoint_state(run_dir / "checkpoints" / "last.ckpt")


# -- FSDP2 units, in one process -----------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "block"),
    [
        ("t5", "T5Block"),
        ("bert", "BertLayer"),
        ("roberta", "RobertaLayer"),
        ("gpt2", "GPT2Block"),
        ("llama", "LlamaDecoderLayer"),
    ],
)
def test_transformer_blocks_are_found_in_every_family(family: str, block: str) -> None:
    model = BUILDERS[family]()
    blocks = transformer_blocks(model)
    assert {type(b).__name__ for b in blocks} == {block}
    layers = getattr(model.config, "num_layers", None) or model.config.num_hidden_layers
    # T5 has an encoder and a decoder stack.
    assert len(blocks) == layers * (2 if family == "t5" else 1)


@pytest.fixture
def one_process_group() -> Any:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
    finally:
        dist.destroy_process_group()


def test_configure_model_shards_blocks_and_root_once(
    one_process_group: Any, backbone: str, minilm: str
) -> None:
    module = tiny_classifier(backbone, minilm, task="sst2")
    module._device_mesh = one_process_group  # what ModelParallelStrategy sets
    module.configure_model()
    assert is_fully_sharded(module.model)
    assert all(is_fully_sharded(b) for b in transformer_blocks(module.model))
    before = {n: id(p) for n, p in module.model.named_parameters()}
    module.configure_model()  # validate after fit: nothing happens again
    assert before == {n: id(p) for n, p in module.model.named_parameters()}
    assert not fully_shard_blocks(module.model, one_process_group["data_parallel"])
    # Adapter-only checkpoint state is whole tensors, not DTensors, and loads back.
    state = module.adapter_checkpoint_state()
    assert state and all(type(v) is torch.Tensor for v in state.values())
    module.load_state_dict({k: torch.full_like(v, 0.5) for k, v in state.items()})
    assert all(bool((v == 0.5).all()) for v in module.adapter_checkpoint_state().values())


class _Mesh:
    """Stands in for ModelParallelStrategy's 2-D mesh (a real one needs that many ranks)."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __init__(self, tensor_parallel: int) -> None:
        self.tensor_parallel = tensor_parallel

    def __getitem__(self, name: str) -> Any:
        size = self.tensor_parallel if name == "tensor_parallel" else 2
        return SimpleNamespace(size=lambda: size, name=name)


def test_only_data_parallel_meshes_are_used() -> None:
    assert data_parallel_mesh(_Mesh(tensor_parallel=1)).name == "data_parallel"
    with pytest.raises(ValueError, match="tensor_parallel_size=1"):
        data_parallel_mesh(_Mesh(tensor_parallel=2))


def test_checkpoint_record_is_checked_where_the_strategy_loads(backbone: str, minilm: str) -> None:
    # FSDP2 and DeepSpeed load weights themselves, non-strictly, and hand on_load_checkpoint
    # no state_dict: the recorded names and shapes must still refuse another adapter.
    module = tiny_classifier(backbone, minilm, task="sst2")
    module.configure_model()
    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    shapes = checkpoint["hadamard_lit"]["shapes"]
    assert shapes == {k: list(v.shape) for k, v in checkpoint["state_dict"].items()}
    module.on_load_checkpoint({"hadamard_lit": {"shapes": shapes}})  # fits
    name = next(iter(shapes))
    with pytest.raises(ValueError, match="shapes differ"):
        module.on_load_checkpoint({"hadamard_lit": {"shapes": {**shapes, name: [7]}}})
    fewer = {k: v for k, v in shapes.items() if k != name}
    with pytest.raises(ValueError, match="does not fit SequenceClassificationModule"):
        module.on_load_checkpoint({"hadamard_lit": {"shapes": fewer}})


# -- 2 processes ---------------------------------------------------------------------------


def check_cli_run(run_dir: Path, reference: dict[str, torch.Tensor], exported: Path) -> None:
    """A 2-process CLI run: frozen weights untouched on both ranks, its checkpoint equal to
    the one-process reference, loadable, and exported to a plain model that matches it."""
    check_probes(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    check_matches(checkpoint_state(last), reference)
    module = SequenceClassificationModule.load_from_checkpoint(last)
    check_loads_and_exports(last, module, run_dir / "config.yaml", exported)


def test_ddp_through_the_cli(
    tmp_path: Path,
    reference: dict[str, torch.Tensor],
    backbone: str,
    minilm: str,
    shared_data: Path,
) -> None:
    config = run_config(tmp_path, "ddp", backbone, minilm, shared_data)
    cli_fit(config, "ddp")
    check_cli_run(tmp_path / "ddp" / "version_0", reference, tmp_path / "exported")


def test_fsdp2_through_the_cli_resumes(
    tmp_path: Path,
    reference: dict[str, torch.Tensor],
    backbone: str,
    minilm: str,
    shared_data: Path,
) -> None:
    first = run_config(tmp_path, "first", backbone, minilm, shared_data, max_epochs=1)
    cli_fit(first, "fsdp2")
    stopped = tmp_path / "first" / "version_0" / "checkpoints" / "last.ckpt"
    assert stopped.is_file(), "save_distributed_checkpoint: false writes one file"
    assert sorted(checkpoint_state(stopped)) == sorted(reference)

    resumed = run_config(tmp_path, "resumed", backbone, minilm, shared_data)
    cli_fit(resumed, "fsdp2", "--ckpt_path", str(stopped))
    check_cli_run(tmp_path / "resumed" / "version_0", reference, tmp_path / "exported")


@requires_deepspeed
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_resumes(
    stage: int,
    tmp_path: Path,
    reference: dict[str, torch.Tensor],
    backbone: str,
    minilm: str,
    shared_data: Path,
) -> None:
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    args = ["--backbone", backbone, "--tokenizer", minilm, "--data-dir", str(shared_data)]
    script, case = HELPERS / "strategy_case.py", f"zero{stage}"
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    run_script(script, case, str(first), "--max-epochs", "1", *args, timeout=420)
    stopped = first / "last.ckpt"
    assert stopped.is_dir(), "DeepSpeed checkpoints are directories"
    resume = ("--ckpt-path", str(stopped))
    run_script(script, case, str(resumed), "--max-epochs", str(EPOCHS), *resume, *args, timeout=420)
    check_probes(resumed)
    last = resumed / "last.ckpt"
    # What rank 0 read back in the run, and what read_checkpoint reads here: the same.
    check_matches(torch.load(resumed / "last_adapter.pt", weights_only=True), reference)
    check_matches(checkpoint_state(last), reference)
    # exclude_frozen_parameters: the directory holds no backbone weight.
    sizes = sum(f.stat().st_size for f in last.rglob("*.pt"))
    assert sizes < 1_000_000, f"{sizes} bytes: the frozen backbone was saved"

    # load_from_checkpoint takes the single file Lightning's converter writes.
    converted = tmp_path / "converted.ckpt"
    convert_zero_checkpoint_to_fp32_state_dict(last, converted)
    module = SequenceClassificationModule.load_from_checkpoint(converted)
    fresh = lambda: tiny_classifier(backbone, minilm, task="sst2")  # noqa: E731
    check_loads_and_exports(last, module, None, tmp_path / "exported", fresh)


# -- GPU paths -----------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("fragment", ["fsdp", "deepspeed_stage_2", "deepspeed_stage_3", "bf16"])
def test_gpu_strategies(
    fragment: str,
    tmp_path: Path,
    reference: dict[str, torch.Tensor],
    backbone: str,
    minilm: str,
    shared_data: Path,
) -> None:
    """Lightning's CUDA-only paths, through the CLI with each fragment as shipped.

    With 2 GPUs the fp32 runs must match the CPU reference; with 1 (a different global
    batch) and under bf16, the checkpoint's keys and shapes must.
    """
    if fragment.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    devices = min(2, torch.cuda.device_count())
    config = run_config(tmp_path, fragment, backbone, minilm, shared_data, accelerator="gpu")
    extra = ["--trainer.strategy", "ddp"] if (fragment == "bf16" and devices == 2) else []
    cli_fit(config, fragment, *extra, devices=devices, timeout=600, env={"DS_ACCELERATOR": "cuda"})
    run_dir = tmp_path / fragment / "version_0"
    check_probes(run_dir, world_size=devices)
    last = run_dir / "checkpoints" / "last.ckpt"
    state = checkpoint_state(last)
    if devices == 2 and fragment != "bf16":
        check_matches({k: v.float() for k, v in state.items()}, reference)
    else:
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
    module = SequenceClassificationModule.load_from_checkpoint(
        last if last.is_file() else _converted(last, tmp_path)
    )
    check_loads_and_exports(last, module, run_dir / "config.yaml", tmp_path / "exported")


def _converted(ckpt: Path, tmp_path: Path) -> Path:
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    out = tmp_path / "converted.ckpt"
    convert_zero_checkpoint_to_fp32_state_dict(ckpt, out)
    return out
