"""What differs between the transformers and diffusers releases the requirements allow.

transformers' ``from_pretrained`` takes the weight precision as ``torch_dtype`` before 4.56 and as
``dtype`` from 4.56 on (``torch_dtype`` then logs a deprecation); diffusers takes ``torch_dtype`` in
every release from 0.32 on, so its loaders need nothing from here.
"""

from __future__ import annotations

import functools

import torch

DTYPE_KEYWORD_SINCE = (4, 56)


def _release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``4.46.0`` or ``5.0.0.dev0``."""
    major, minor = (version.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@functools.cache
def _dtype_keyword() -> str:
    import transformers

    return "dtype" if _release(transformers.__version__) >= DTYPE_KEYWORD_SINCE else "torch_dtype"


def pretrained_dtype(dtype: torch.dtype) -> dict:
    """Keyword arguments giving a transformers ``from_pretrained`` the weight precision ``dtype``."""
    return {_dtype_keyword(): dtype}
