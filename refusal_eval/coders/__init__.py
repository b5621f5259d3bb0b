"""SAE architectures as plain-tensor sparse coders, one module per architecture."""

from . import jumprelu, standard, topk  # noqa: F401  (register the architectures)
from ._base import SparseCoder, architectures, coder_class, register_architecture
from .jumprelu import JumpReLUCoder
from .standard import StandardCoder
from .topk import TopKCoder

__all__ = [
    "JumpReLUCoder",
    "SparseCoder",
    "StandardCoder",
    "TopKCoder",
    "architectures",
    "coder_class",
    "register_architecture",
]
