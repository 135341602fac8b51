"""The distributed access layer: everything that knows how a strategy holds tensors.

- :mod:`~hadamard_lit.parallel.tensors`: whole shapes, whole tensors, gathering and
  writing FSDP2 ``DTensor`` shards and DeepSpeed ZeRO-3 partitions (plain PyTorch);
- :mod:`~hadamard_lit.parallel.access`: reading gradients, resetting and freezing trained
  tensors between backward and optimizer step, per Lightning strategy;
- :mod:`~hadamard_lit.parallel.strategies`: questions about a Lightning strategy (who
  restores weights, ZeRO-3 model building);
- :mod:`~hadamard_lit.parallel.checkpoints`: checkpoint files and DeepSpeed directories;
- :mod:`~hadamard_lit.parallel.fsdp2`: FSDP2 units per transformer block.
"""
