"""transformers integration: "swaa" in AttentionInterface + AttentionMaskInterface, and apply_swaa(model, cfg).

No model class is patched. Every decoder that routes attention through transformers' registry (Llama, Qwen2,
Qwen3, Qwen3-MoE, Mistral, ...) keeps its own layers "full_attention"; the window, sinks, non-sliding layers and
FA decode are applied inside the registered attention function, per layer, from ``model.config.swaa_config``.

Which queries are "decode tokens" (full attention under ``force_fa_decode``):
- inference: a forward with one query against a longer cache (a generation step); prompts, and any multi-token
  chunk, are prefill and use SWA;
- training or scoring: queries at positions ``>= prompt_length`` (a kwarg: an int or one per row, counted in
  real tokens), which ``apply_swaa`` derives per row from the labels' leading ``-100`` run when not given.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function, prepare_padding_mask, sdpa_mask

from ..attention import swaa_attention
from ..attention.masks import visible
from ..config import SWAAConfig, config_of, model_label

__all__ = ["apply_swaa", "load_model", "compile_blocks", "get_swaa_config", "swaa_attention_forward", "swaa_mask",
           "prompt_length_from_labels", "VERIFIED_MODEL_TYPES"]

ATTN_NAME = "swaa"
_CAPTURE: list | None = None        # set by swaa.analysis.attention_maps.capture_qk while it records queries and keys
_ACTIVE_CACHE = None                # the SinkWindowCache of the forward in progress (set by the model's pre-hook)
# verified by tests/integration (tiny random-weight configs built in the tests)
VERIFIED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "qwen3_moe", "mistral")


def get_swaa_config(config) -> SWAAConfig | None:
    """The model's SWAAConfig (a SWAAConfig or the plain dict that from_pretrained gives back), or None."""
    return config_of(config)


def swaa_mask(batch_size: int, q_length: int, kv_length: int, q_offset=0, kv_offset=0,
              mask_function=causal_mask_function, attention_mask=None, device="cpu", **kwargs):
    """Mask function registered as "swaa": None when the batch is plain causal without padding (the attention
    function then uses the analytic rule and the fast kernels), else transformers' boolean (B, 1, q, kv) mask
    with padding and packing kept (never the "drop the mask" shortcut)."""
    padding = prepare_padding_mask(attention_mask, kv_length, kv_offset)
    end_aligned = isinstance(q_offset, int) and q_offset + q_length == kv_offset + kv_length
    if (mask_function is causal_mask_function and end_aligned and kv_offset == 0
            and (padding is None or bool(padding.all()))):
        return None
    kwargs.pop("allow_is_causal_skip", None)
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                     allow_is_causal_skip=False, device=device, **kwargs)


def swaa_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                           sliding_window=None, **kwargs):
    """The "swaa" attention function: query (B, Hq, q, D), key/value (B, Hkv, kv, D) -> ((B, q, Hq, D), None)."""
    if getattr(_ACTIVE_CACHE, "static_decode", False):      # a graph-decode step: the static layer knows its keys
        out = _ACTIVE_CACHE.layers[module.layer_idx].attend(query, scaling)
        return out.transpose(1, 2).contiguous(), None
    cfg = get_swaa_config(module.config)
    plan = cfg.layer(module.layer_idx) if cfg is not None else None
    window = plan.window if plan is not None else None
    keep_first = plan.keep_first if plan is not None else 0
    lq, lk = query.shape[2], key.shape[2]
    if dropout and module.training:
        raise ValueError(f"attention dropout={dropout} is not supported by the swaa attention; set the model's "
                         "attention_dropout to 0 (the models SWAA targets train without it)")
    fa_from = None
    if window is not None and plan.fa_decode:
        prompt_length = kwargs.get("prompt_length")
        if prompt_length is not None:
            fa_from = _as_fa_from(prompt_length, query.shape[0], query.device)
        elif lq == 1 and lk > 1 and not module.training:
            window, keep_first = None, 0          # a generation step: full attention over the whole cache
        elif module.training:
            raise ValueError(
                "force_fa_decode in training needs to know where each answer starts: pass prompt_length= (int or "
                "one per row) to the model, or labels with the prompt set to -100 on a model prepared by apply_swaa")
    mask = attention_mask
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"the swaa attention got a {type(mask).__name__} mask; expected a boolean tensor or None")
        mask = mask[:, :, :, :lk]
        if mask.dtype != torch.bool:                      # an additive float mask (0 / -inf)
            mask = mask > torch.finfo(mask.dtype).min / 2
    if _ACTIVE_CACHE is not None and window is not None:
        from .cache import SinkWindowLayer
        layer = _ACTIVE_CACHE.layers[module.layer_idx]
        if (isinstance(layer, SinkWindowLayer) and layer.attn_pos is not None and layer.attn_pos.shape[-1] == lk
                and not layer.attn_contiguous):
            if layer.canonical and lq == 1:
                # one new token after an eviction without padding: the stored slots are exactly the sinks and the
                # window the rule keeps for it, so plain attention over them, with no mask to build
                mask = None
            else:
                # keys may have been evicted: the rule on the stored keys' real positions, as a final mask
                mask = _positional_visibility(layer, lq, window, keep_first)
            window, keep_first, fa_from = None, 0, None
    if _CAPTURE is not None:                   # swaa.analysis.attention_maps.capture_qk(): keep what the maps need
        _CAPTURE.append(dict(layer=module.layer_idx, q=query.detach(), k=key.detach(), scale=scaling, window=window,
                             keep_first=keep_first, mask=mask, fa_from=fa_from))
    out = swaa_attention(query, key, value, sliding_window_size=window, keep_first=keep_first, scale=scaling,
                         mask=mask, fa_from=fa_from)
    return out.transpose(1, 2).contiguous(), None


def _as_fa_from(prompt_length, batch: int, device):
    if isinstance(prompt_length, torch.Tensor):
        pl = prompt_length.to(device=device, dtype=torch.long).reshape(-1)
        if pl.numel() == 1:
            return int(pl.item())
        if pl.numel() != batch:
            raise ValueError(f"prompt_length has {pl.numel()} entries for a batch of {batch}")
        return pl
    if isinstance(prompt_length, (list, tuple)):
        return _as_fa_from(torch.tensor(prompt_length), batch, device)
    return int(prompt_length)


def prompt_length_from_labels(labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                              ignore_index: int = -100) -> torch.Tensor:
    """Per row, the number of real prompt tokens: the leading run of ``ignore_index`` labels, less left padding.

    labels (B, L) -> (B,) long. Right padding (the usual for training) needs no mask; with left padding pass
    the 2-D attention mask so that pad tokens are not counted as prompt.
    """
    ignored = labels == ignore_index
    lead = torch.cumprod(ignored.to(torch.int32), dim=-1).sum(-1)
    if attention_mask is not None and attention_mask.dim() == 2:
        left_pad = torch.cumprod((attention_mask == 0).to(torch.int32), dim=-1).sum(-1)
        lead = lead - left_pad
    return lead.clamp(min=0).long()


def _pre_forward_hook(module, args, kwargs):
    """Before the model's forward: derive prompt_length from labels; set up the sink+window cache."""
    global _ACTIVE_CACHE
    if kwargs.get("prompt_length") is None and kwargs.get("labels") is not None:
        cfg = get_swaa_config(module.config)
        if cfg is not None and cfg.sliding_window_size is not None and cfg.force_fa_decode:
            kwargs["prompt_length"] = prompt_length_from_labels(kwargs["labels"], kwargs.get("attention_mask"))
    cache = kwargs.get("past_key_values")
    if getattr(cache, "static_decode", False):               # swaa.integrations.cuda_graph_decode.StaticDecodeCache
        _ACTIVE_CACHE = cache
    elif cache is not None:
        from .cache import install_sink_window, prepare_positions
        if getattr(module, "_swaa_kv_eviction", False):
            install_sink_window(cache, module.config)
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        ref = ids if ids is not None else kwargs.get("inputs_embeds")
        if ref is not None and prepare_positions(cache, kwargs.get("attention_mask"), ref.shape[1], ref.shape[0],
                                                 ref.device):
            _ACTIVE_CACHE = cache
    return args, kwargs


def _post_forward_hook(module, args, kwargs, output):
    global _ACTIVE_CACHE
    _ACTIVE_CACHE = None
    return output


def _positional_visibility(layer, lq: int, window: int, keep_first: int) -> torch.Tensor:
    """(B, 1, Lq, Lk) visibility from the real positions a SinkWindowLayer returned (valid after eviction)."""
    kpos = layer.attn_pos[:, None, :]                                  # (B, 1, Lk)
    qpos = layer.attn_pos[:, -lq:, None]                               # (B, Lq, 1)
    return (visible(qpos, kpos, window, keep_first) & (kpos >= 0) & (qpos >= 0))[:, None]


def _native_window(config) -> str | None:
    types = getattr(config, "layer_types", None)
    if types is not None:
        n = sum(t != "full_attention" for t in types)
        return f"{n} of its layer_types are not 'full_attention'" if n else None
    if getattr(config, "sliding_window", None) is not None:
        return f"config.sliding_window={config.sliding_window}"
    return None


def _clear_native_window(model) -> None:
    """Turn the model's own window off: in its config, and in what its modules read from the config at
    construction (Qwen2/Qwen3 attention layers keep ``sliding_window`` and ``layer_type``, their base model
    ``has_sliding_layers``, which makes it build a sliding mask from the config's now absent window). Instance
    attributes only: no class is changed."""
    config = model.config
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = ["full_attention"] * len(config.layer_types)
    if hasattr(config, "use_sliding_window"):
        config.use_sliding_window = False
    if hasattr(config, "sliding_window"):
        config.sliding_window = None
    for module in model.modules():
        if getattr(module, "has_sliding_layers", False):
            module.has_sliding_layers = False
        for name in ("layer_type", "attention_type"):
            if getattr(module, name, None) == "sliding_attention":
                setattr(module, name, "full_attention")
        if getattr(module, "sliding_window", None) is not None:
            module.sliding_window = None


def apply_swaa(model, cfg: SWAAConfig | dict | None, *, replace_native_window: bool = False,
               kv_eviction: bool | None = None):
    """Run ``model`` under ``cfg`` through the "swaa" attention; returns the same model.

    The config is stored on ``model.config.swaa_config`` (saved by ``save_pretrained``); layer indices beyond the
    model's depth are ignored with one warning (:meth:`SWAAConfig.validate_layers`). ``cfg=None`` means full
    attention. A model that already slides natively (Mistral's ``sliding_window``, Qwen's sliding ``layer_types``)
    is refused unless ``replace_native_window=True``, which turns its own window off (in its config and in what its
    modules cached from it) so that SWAA's rule is the only one.
    ``kv_eviction``: ``generate`` (and any forward given an empty DynamicCache) keeps only sinks + the last W-1
    keys in sliding layers whose decode is windowed (:mod:`swaa.integrations.cache`); False keeps everything;
    None (default) keeps the model's previous choice (True the first time).
    """
    cfg = SWAAConfig.from_dict(cfg) if cfg is not None else SWAAConfig()
    config = model.config
    name = type(model).__name__
    n_layers = getattr(config, "num_hidden_layers", None)
    if n_layers is None:
        raise ValueError(f"{name}: config has no num_hidden_layers; SWAA needs a decoder-only model")
    attn_layers = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config")
                   and m.__class__.__name__.endswith("Attention")]
    can_set = getattr(type(model), "_can_set_attn_implementation", None)
    if not attn_layers or (can_set is not None and not can_set()):
        raise ValueError(
            f"{name} (model_type={getattr(config, 'model_type', '?')!r}) does not route attention through "
            "transformers' AttentionInterface, so SWAA cannot be applied without patching it. Verified model types: "
            f"{', '.join(VERIFIED_MODEL_TYPES)}")
    cfg.validate_layers(n_layers, model_label(config))
    native = _native_window(config)
    if native:
        if not replace_native_window:
            raise ValueError(
                f"{name} already uses sliding-window attention natively ({native}). SWAA adapts full-attention "
                "models; pass replace_native_window=True to turn the native window off and apply SWAA's instead")
        _clear_native_window(model)
    config.swaa_config = cfg
    model.set_attn_implementation(ATTN_NAME)
    if config._attn_implementation != ATTN_NAME:
        raise ValueError(f"{name} refused attn_implementation={ATTN_NAME!r} (got {config._attn_implementation!r})")
    model._swaa_kv_eviction = getattr(model, "_swaa_kv_eviction", True) if kv_eviction is None else bool(kv_eviction)
    if not getattr(model, "_swaa_hooks", None):
        model._swaa_hooks = (model.register_forward_pre_hook(_pre_forward_hook, with_kwargs=True),
                             model.register_forward_hook(_post_forward_hook, with_kwargs=True, always_call=True))
    return model


def load_model(name_or_path=None, *, device="cpu", dtype=None, swaa=None, **kwargs):
    """Load a causal LM and its tokenizer (:func:`swaa.models.load_pretrained`) and run it under ``swaa`` (a
    SWAAConfig or dict); a saved model that carries ``swaa_config`` (``save_pretrained`` after :func:`apply_swaa`)
    gets its own applied. Returns ``(model, tokenizer)`` in eval mode."""
    from ..models import load_pretrained
    model, tok = load_pretrained(name_or_path, device=device, dtype=dtype, **kwargs)
    cfg = swaa if swaa is not None else getattr(model.config, "swaa_config", None)
    if cfg is not None:
        apply_swaa(model, cfg)
    return model, tok


# the pieces of a decoder layer that hold no attention and no data-dependent control flow: norms, dense MLPs, the
# rotary table (a MoE block's expert routing is left eager; its dense expert/shared MLPs are compiled)
_COMPILED_SUFFIXES = ("RMSNorm", "MLP", "RotaryEmbedding")


def compile_blocks(model, enabled: bool = True, *, dynamic: bool | None = None) -> list[str]:
    """Compile the model's norms, dense MLPs and rotary table with ``torch.compile``, leaving attention eager.

    HF runs RMSNorm (six kernels through fp32), SiLU-and-multiply and the residual path unfused; at 32k tokens
    on an H200 that is ~40% of a Qwen3-4B prefill under SWA, which caps what a faster attention can show.
    Each module is compiled in place (``nn.Module.compile``): no class is patched, attention still goes through
    the registry, and the layers share their compiled graphs (one per module type and shape class). The first
    forward at a new shape compiles (seconds); a second length makes the graphs shape-generic
    (``dynamic=None``). ``enabled=False`` returns the modules to eager. Returns the compiled modules' names.
    """
    names = []
    for name, mod in model.named_modules():
        if not type(mod).__name__.endswith(_COMPILED_SUFFIXES):
            continue
        if enabled:
            mod.compile(dynamic=dynamic)
        else:
            mod._compiled_call_impl = None
        names.append(name)
    if not names:
        raise ValueError(f"{type(model).__name__}: no module named *RMSNorm, *MLP or *RotaryEmbedding to compile; "
                         "compile_blocks knows the Llama/Qwen/Mistral decoder layouts")
    model._swaa_compiled_blocks = bool(enabled)
    return names


AttentionInterface.register(ATTN_NAME, swaa_attention_forward)
AttentionMaskInterface.register(ATTN_NAME, swaa_mask)
