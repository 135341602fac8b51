"""hadamard_lit: Hadamard-product parameter-efficient fine-tuning on PyTorch Lightning."""

__version__ = "0.1.0.dev0"
