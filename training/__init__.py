"""PolyLM training side: model configs (``training.config``), the decoder (``training.model``),
FSDP2 wrapping (``training.parallelize``), Hugging Face export (``training.export``), plus the
tokenizer, curriculum data loader and trainer modules.

Submodules are imported explicitly (``from training.model import PolyLM``); importing the package
itself is cheap and does not import torch.
"""
