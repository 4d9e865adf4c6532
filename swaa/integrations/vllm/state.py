"""What the CPU and CUDA backends share: each layer's role under the SWAA config, the attention backend class that
carries that role, the per-step metadata of windowed layers, and the impl/builder parts that use them.

Roles: ``full`` (full attention for every token: vLLM's own kernel, metadata and KV spec, untouched), ``window``
(sinks + window for every query: the step layout of :mod:`.step` and its own KV-cache group that frees the blocks
between sinks and window, :mod:`.kv`) and ``fa_decode`` (prompt tokens windowed, decode tokens full: the decode rows
go to vLLM's kernel with vLLM's own metadata for them, and the layer keeps every block). vLLM picks one backend class
for all layers when it builds them; once the weights are loaded each windowed layer's impl gives its layer the class
of its role (vLLM supports a backend per layer), so the layers of one role share a metadata builder, and their KV
specs put them in their own KV-cache groups.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import rules

__all__ = ["FULL", "WINDOW", "FA_DECODE", "role_of", "active_config", "StepMetadata", "SWAAImplMixin",
           "SWAABuilderMixin", "window_spec"]

FULL, WINDOW, FA_DECODE = "full", "window", "fa_decode"

_STATE = {"config": None, "hybrid": True}    # the model built last in this process (its KV specs come next)


def role_of(plan) -> str:
    if plan.window is None:
        return FULL
    return FA_DECODE if plan.fa_decode else WINDOW


def active_config():
    """The SWAA config of the model being built (None: plugin inactive); read at every layer's construction, so
    several engines in one process each get their own. An invalid config raises here, at start-up."""
    from vllm.config import get_current_vllm_config
    vc = get_current_vllm_config()
    _STATE["config"] = rules.config_from_hf(vc.model_config.hf_config) if vc.model_config else None
    _STATE["hybrid"] = not vc.scheduler_config.disable_hybrid_kv_cache_manager
    return _STATE["config"]


def window_spec(spec):
    """The KV spec of a windowed layer: its own group that frees the middle blocks, unless the user turned vLLM's
    hybrid KV-cache manager off (then every layer shares one group and keeps every block)."""
    cfg = _STATE["config"]
    if not _STATE["hybrid"]:
        return spec
    from .kv import sink_window_spec
    return sink_window_spec(spec, cfg.sliding_window_size, cfg.keep_first)


@dataclass
class StepMetadata:
    """One step of the windowed layers of a KV-cache group: the layout of the rows that follow the window rule
    (platform-specific, built by the backend's builder) and, under FA decode, vLLM's own metadata for the decode
    rows, which come first in the batch (``fa_tokens`` of them)."""
    num_actual_tokens: int
    windowed: object
    fa: object | None = None
    fa_tokens: int = 0


class SWAABuilderMixin:
    """Mixed into a vLLM metadata builder (before it) for the ``window`` and ``fa_decode`` roles; the platform gives
    ``_layout(common, use)``: the layout of the requests selected by ``use``."""
    reorder_batch_threshold = 1                 # decode rows first: FA decode hands them to vLLM as one prefix

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)
        self.reorder_batch_threshold = 1
        cfg = rules.config_from_hf(vllm_config.model_config.hf_config)
        plans = {cfg.layer(rules.layer_index(n)) for n in layer_names}
        if len(plans) != 1:
            raise RuntimeError(f"one SWAA attention group holds layers with different plans: {sorted(plans)}")
        self.swaa_plan = plans.pop()

    def build(self, common_prefix_len, common_attn_metadata, fast_build: bool = False):
        c = common_attn_metadata
        nreq = c.num_reqs
        prefilling = c.is_prefilling
        if prefilling is None:
            raise RuntimeError("vLLM gave no is_prefilling flags; the SWAA plugin needs them to tell prompt tokens "
                               "from decode tokens")
        prefilling = prefilling[:nreq].cpu()
        if not self.swaa_plan.fa_decode:
            return StepMetadata(c.num_actual_tokens, self._layout(c, prefilling | True))
        decode = int((~prefilling).long().cumprod(0).sum())           # the leading decode requests
        if bool((~prefilling[decode:]).any()):
            raise RuntimeError("decode requests are not first in the batch; FA decode needs vLLM's decode-first order")
        fa, fa_tokens = None, 0
        if decode:
            fa_tokens = int(c.query_start_loc_cpu[decode])
            fa = super().build(common_prefix_len, c.unpadded(fa_tokens, decode), fast_build)
        return StepMetadata(c.num_actual_tokens, self._layout(c, prefilling), fa, fa_tokens)


class SWAAImplMixin:
    """Mixed into a vLLM attention impl class (before it). ``role_backends`` (set by the platform module) maps a
    role to its backend class; ``_attend(query, kv_cache, layout, out)`` runs the windowed rows of a step."""
    role_backends: dict = {}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from vllm.config import get_current_vllm_config
        self.swaa = active_config()              # raises here, at start-up, on an invalid config
        self._layers = get_current_vllm_config().compilation_config.static_forward_context
        self._roles: dict[str, str] = {}

    def process_weights_after_loading(self, act_dtype) -> None:
        super().process_weights_after_loading(act_dtype)
        for layer in list(self._layers.values()):
            if getattr(layer, "impl", None) is self:
                role = self._role(layer)
                if role != FULL:
                    layer.attn_backend = self.role_backends[role]

    def _role(self, layer) -> str:
        name = layer.layer_name
        if name not in self._roles:
            role = FULL
            if self.swaa is not None and self.attn_type == "decoder":
                role = role_of(self.swaa.layer(rules.layer_index(name)))
            if role != FULL and (self.alibi_slopes is not None or self.logits_soft_cap or self.sinks is not None
                                 or self.sliding_window not in (None, -1, (-1, -1))):
                raise ValueError(f"{name}: the SWAA plugin does not combine with ALiBi, soft-capping, learned "
                                 "sinks or a native sliding window; use a model without them")
            if role != FULL and self.kv_cache_dtype != "auto":
                raise NotImplementedError(f"{name}: SWAA windowed layers need an unquantized KV cache "
                                          f"(kv_cache_dtype={self.kv_cache_dtype!r})")
            self._roles[name] = role
        return self._roles[name]

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None,
                output_block_scale=None):
        md = attn_metadata
        if not isinstance(md, StepMetadata):
            if md is not None and self._role(layer) != FULL:
                raise RuntimeError(f"{layer.layer_name} is a SWAA windowed layer but got {type(md).__name__}; its "
                                   "attention backend was not set when the weights were loaded")
            return super().forward(layer, query, key, value, kv_cache, md, output, output_scale, output_block_scale)
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("SWAA windowed layers need unquantized outputs")
        if md.fa is not None:
            super().forward(layer, query, key, value, kv_cache, md.fa, output)
        n = md.num_actual_tokens
        self._attend(query[:n].view(n, self.num_heads, self.head_size), kv_cache, md.windowed,
                     output[:n].view(n, self.num_heads, self.head_size))
        return output
