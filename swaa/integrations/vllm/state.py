"""What the plugin knows about the model being built in this process: its SWAA config (read when each attention
layer is constructed) and the KV cache spec that follows from it. Shared by the CPU and CUDA backends."""
from __future__ import annotations

from dataclasses import fields

from . import rules

__all__ = ["active_config", "kv_spec_for"]

_STATE = {"config": None}     # the SWAA config of the model loaded last in this process (for its KV spec)


def active_config():
    """The SWAA config of the model being built (None: plugin inactive); read at every layer's construction,
    so several engines in one process each get their own. An invalid config raises here, at start-up."""
    from vllm.config import get_current_vllm_config
    vc = get_current_vllm_config()
    _STATE["config"] = rules.config_from_hf(vc.model_config.hf_config) if vc.model_config else None
    return _STATE["config"]


def kv_spec_for(spec):
    """Free the middle blocks only when every layer is windowed at decode: one KV cache group shares its block
    table, so a model with any full-attention reader (a non-sliding layer, FA decode) keeps every block."""
    cfg = _STATE["config"]
    if cfg is None or cfg.sliding_window_size is None or cfg.non_sliding_layers or cfg.force_fa_decode:
        return spec
    from .kv import SinkWindowSpec, register
    register()
    base = {f.name: getattr(spec, f.name) for f in fields(spec) if f.init}
    return SinkWindowSpec(**base, swaa_window=cfg.sliding_window_size, swaa_keep_first=cfg.keep_first)
