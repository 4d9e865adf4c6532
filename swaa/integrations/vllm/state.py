"""What the plugin knows about the model being built in this process: its SWAA config (read when each attention
layer is constructed), the KV cache spec that follows from it, and the part of the attention classes that the CPU
and CUDA backends share (per-layer plans, the rows of a step, the SWAA forward)."""
from __future__ import annotations

from dataclasses import fields

from . import rules

__all__ = ["active_config", "kv_spec_for", "attach_rows", "SWAAImplMixin"]

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


def attach_rows(md, common_attn_metadata):
    """Give a backend's metadata the requests of the step (:func:`rules.request_rows`); returns ``md``."""
    c = common_attn_metadata
    md.swaa_rows = rules.request_rows(c.query_start_loc_cpu, c.seq_lens, c.is_prefilling)
    return md


class SWAAImplMixin:
    """Mixed into a vLLM attention impl class (before it): ``_plan(layer)`` says whether a layer runs the SWAA rule;
    ``forward`` runs it over the paged cache (``_swaa_forward``) there, and the base impl's kernel elsewhere."""
    _dense_fn = None          # a fused kernel for gap-free requests (see rules.swaa_paged_attention)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.swaa = active_config()              # raises here, at start-up, on an invalid config
        self._plans: dict[str, object] = {}

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None,
                output_block_scale=None):
        plan = self._plan(layer)
        if plan is None or attn_metadata is None:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
                                   output_block_scale)
        return self._swaa_forward(plan, query, kv_cache, attn_metadata, output, output_scale, output_block_scale)

    def _plan(self, layer):
        """The layer's plan, or None where vLLM's own kernel does the same thing (full attention throughout)."""
        name = layer.layer_name
        if name not in self._plans:
            plan = None
            if self.swaa is not None and self.attn_type == "decoder":
                p = self.swaa.layer(rules.layer_index(name))
                plan = p if p.window is not None else None
            if plan is not None and (self.alibi_slopes is not None or self.logits_soft_cap or self.sinks is not None
                                     or self.sliding_window not in (None, -1, (-1, -1))):
                raise ValueError(f"{name}: the SWAA plugin does not combine with ALiBi, soft-capping, learned "
                                 "sinks or a native sliding window; use a model without them")
            self._plans[name] = plan
        return self._plans[name]

    def _swaa_forward(self, plan, query, kv_cache, attn_metadata, output, output_scale, output_block_scale):
        if output_scale is not None or output_block_scale is not None or self.kv_cache_dtype != "auto":
            raise NotImplementedError("SWAA layers need an unquantized KV cache and unquantized outputs")
        import torch
        n = attn_metadata.num_actual_tokens
        out = output[:n].view(n, self.num_heads, self.head_size)
        with torch.no_grad():
            rules.swaa_paged_attention(plan, query[:n].view(n, self.num_heads, self.head_size), kv_cache,
                                       attn_metadata.block_table, attn_metadata.swaa_rows, self.scale, out,
                                       dense_fn=self._dense_fn)
        return output
