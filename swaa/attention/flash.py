"""flash-attn binding: availability check now; the call itself (native keep_first in the SWAA fork, or stock
flash-attn for the window merged with the sink part by LSE) lands with the Triton kernels (issue #4)."""
from __future__ import annotations

import importlib.util


def flash_available() -> str | None:
    if importlib.util.find_spec("flash_attn") is None:
        return ("flash_attn is not installed (pip install flash-attn on a CUDA machine, or the SWAA fork for "
                "native keep_first)")
    return "the flash-attn binding is not built yet in this version of swaa (planned with the Triton kernels)"


def flash_attention(q, k, v, **kw):  # only reachable if flash_available() returned None
    raise NotImplementedError(flash_available())
