"""Tiny random-weight decoders of each supported architecture, and an independent dense SWAA attention.

The independent attention re-derives the rule with Python loops from ARCHITECTURE.md's text (it shares no code
with swaa.attention), for batches without padding; padded cases are checked against each row computed alone.
"""
import math

import torch
import transformers
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, attention_dropout=0.0, pad_token_id=0,
              bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)

ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=16)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                  dict(head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                       decoder_sparse_step=1, mlp_only_layers=[])),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=None)),
}
REQUIRED = ["llama", "qwen2", "qwen3", "qwen3_moe"]
# others that route attention through the registry, tried as a bonus
BONUS = {
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=None)),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(head_dim=16)),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", dict(sliding_window=None)),
}


def make_model(arch: str, seed: int = 0, attn: str = "sdpa", **overrides):
    cfg_name, cls_name, extra = {**ARCHS, **BONUS}[arch]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_name)(**{**COMMON, **extra, **overrides})
    model = getattr(transformers, cls_name)._from_config(config, attn_implementation=attn)
    with torch.no_grad():                  # larger weights than the init so that attention patterns matter
        for n, p in model.named_parameters():
            if p.dim() == 2 and ("proj" in n or "embed" in n):
                p.normal_(0, 0.15)
    model.generation_config.eos_token_id = None     # generate exactly max_new_tokens
    return model.eval()


def _independent_mask(lq, lk, window, keep_first, fa_from_row):
    m = torch.zeros(lq, lk, dtype=torch.bool)
    for t in range(lq):
        i = t + lk - lq
        for j in range(lk):
            if j > i:
                continue
            if window is None or (fa_from_row is not None and i >= fa_from_row):
                m[t, j] = True
            else:
                m[t, j] = (i - j) <= window - 1 or j <= keep_first - 1
    return m


def independent_dense_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    raw = dict(module.config.swaa_config or {})
    layer = module.layer_idx
    window = raw.get("sliding_window_size")
    if layer in raw.get("non_sliding_layers", []):
        window = None
    fad = raw.get("force_fa_decode", False)
    fad = (layer in fad) if isinstance(fad, list) else bool(fad)
    b, hq, lq, d = query.shape
    lk = key.shape[2]
    pl = kwargs.get("prompt_length")
    if fad and lq == 1 and lk > 1 and pl is None:
        window = None
    groups = hq // key.shape[1]
    key = key.repeat_interleave(groups, dim=1).double()
    value = value.repeat_interleave(groups, dim=1).double()
    scores = query.double() @ key.transpose(-1, -2) * (scaling if scaling is not None else 1 / math.sqrt(d))
    out = torch.empty_like(query, dtype=torch.float64)
    for r in range(b):
        fa_from = None
        if fad and pl is not None:
            fa_from = int(pl[r]) if isinstance(pl, torch.Tensor) and pl.dim() else int(pl)
        mask = _independent_mask(lq, lk, window, raw.get("keep_first", 0), fa_from)
        s = scores[r].masked_fill(~mask.to(scores.device), float("-inf"))
        out[r] = torch.softmax(s, dim=-1) @ value[r]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _plain_mask(*args, **kwargs):
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


AttentionInterface.register("swaa_independent", independent_dense_attention)
AttentionMaskInterface.register("swaa_independent", _plain_mask)


def with_independent(model, cfg):
    """The same weights run through the independent dense attention under ``cfg``."""
    model.config.swaa_config = dict(cfg.to_dict())
    model.set_attn_implementation("swaa_independent")
    return model
