"""Optional dependencies: import them where they are needed, with one clear error otherwise."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require", "EXTRAS"]

#: which extra of ``pip install 'kgseqgraph[<extra>]'`` brings a module
EXTRAS = {"transformers": "hf", "sentence_transformers": "hf", "gguf": "hf",
          "accelerate": "hf", "triton": "triton", "torch_scatter": "scatter",
          "onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx"}


def require(module: str, what: str) -> ModuleType:
    """``importlib.import_module(module)``, or an :class:`ImportError` saying what needs it and
    how to install it.

    Args:
        module: the module to import (``"transformers"``).
        what: who needs it, for the message (``"HFT5Encoder"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        how = (f"pip install 'kgseqgraph[{extra}]'" if extra else f"pip install {top}")
        raise ImportError(f"{what} needs the `{top}` package ({how})") from err
