"""The SWAA vLLM plugin (entry point ``vllm.general_plugins``: ``swaa = swaa.integrations.vllm:register``).

It is active only for a model that carries a SWAA config, passed the standard way::

    LLM(model, hf_overrides={"swaa_config": {"sliding_window_size": 2048, "keep_first": 100}})
    vllm serve MODEL --hf-overrides '{"swaa_config": {...}}'        # or: swaa serve MODEL --sliding-window-size ...

On CPU it replaces the CPU attention backend class (:mod:`.cpu`), on CUDA the FlashAttention one (:mod:`.cuda`):
full-attention layers keep vLLM's kernel, windowed layers attend in one batched call per step over the paged cache
(:mod:`.step`, :mod:`.attend`) and keep their blocks in their own KV-cache group (:mod:`.kv`). Models without a
SWAA config run exactly as before. Design and measurements: docs/serving.md.
"""
from __future__ import annotations

__all__ = ["register"]


def register() -> None:
    """Called by vLLM in every process (it may be called more than once)."""
    from vllm.platforms import current_platform
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    if current_platform.is_cpu():
        register_backend(AttentionBackendEnum.CPU_ATTN, "swaa.integrations.vllm.cpu.SWAACPUBackend")
    elif current_platform.is_cuda():
        register_backend(AttentionBackendEnum.FLASH_ATTN, "swaa.integrations.vllm.cuda.SWAAFlashBackend")
    try:                                          # the engine-core process builds the KV managers
        from .kv import register as register_kv
        register_kv()
    except ImportError:                           # an older vLLM without the KV spec registry: no release
        pass
