"""Cost model: FLOPs and bytes per layer of a decoder under a SWAAConfig, and predicted prefill / decode times.

Prefill of ``n`` tokens (empty cache, ``logits_to_keep=1``), per layer ``l``::

    linear FLOPs    = 2 n (hidden (Hq + 2 Hkv) D + Hq D hidden) + MLP 2 n 3 hidden I  (MoE: router + k active experts)
    attention FLOPs = 4 D Hq * visible_pairs(n, n, W_l, S_l)     (W_l None for full-attention layers)

Decode step at a cache of ``n`` tokens (the new token sits at position ``n``): each layer reads its weights once
(MoE at batch 1: the k active experts), reads the keys its query sees (``visible_pairs(1, n + 1, ...)``: n + 1 for
full attention / FA decode, at most S + W for a windowed decode), and HF's cache copies what it stores (``torch.cat``
per step: the stored slots, at most S + W - 1 in an evicting layer). Times come from measured :class:`Rates`:
prefill = n * (non-attention seconds per token) + sum over layers of attention FLOPs / attention TFLOP/s of that
pattern; decode = per-layer step overhead and bytes / bandwidth (summed on CPU, the larger of the two on CUDA).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..attention.masks import visible_pairs
from ..config import SWAAConfig

__all__ = ["ModelShape", "SHAPES", "Rates", "layer_costs", "prefill_cost", "decode_cost", "predict_prefill",
           "predict_decode", "get_shape", "load_rates"]


@dataclass(frozen=True)
class ModelShape:
    """What the cost model needs of a decoder; ``experts`` > 0 makes every layer's MLP a mixture of experts."""

    name: str
    arch: str                    # "llama" | "qwen3" | "qwen3_moe": which transformers config builds it
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    experts: int = 0
    active_experts: int = 0
    moe_intermediate: int = 0
    tied: bool = False

    @classmethod
    def from_config(cls, config, name: str | None = None) -> "ModelShape":
        """The shape of a transformers config (Llama, Qwen2/3, Qwen3-MoE, Mistral, ...)."""
        heads = config.num_attention_heads
        d = getattr(config, "head_dim", None) or config.hidden_size // heads
        experts = getattr(config, "num_experts", 0) or 0
        return cls(name=name or getattr(config, "_name_or_path", "") or config.model_type,
                   arch=config.model_type, layers=config.num_hidden_layers, hidden=config.hidden_size, heads=heads,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads, head_dim=d,
                   intermediate=getattr(config, "intermediate_size", 0) or 0, vocab=config.vocab_size,
                   experts=experts, active_experts=getattr(config, "num_experts_per_tok", 0) if experts else 0,
                   moe_intermediate=getattr(config, "moe_intermediate_size", 0) if experts else 0,
                   tied=bool(getattr(config, "tie_word_embeddings", False)))

    def hf_config(self):
        """A transformers config of this shape (random-weight timing models; no hub access)."""
        import transformers as tf
        common = dict(vocab_size=self.vocab, hidden_size=self.hidden, num_hidden_layers=self.layers,
                      num_attention_heads=self.heads, num_key_value_heads=self.kv_heads, head_dim=self.head_dim,
                      max_position_embeddings=262144, tie_word_embeddings=self.tied)
        if self.arch == "qwen3":
            return tf.Qwen3Config(intermediate_size=self.intermediate, rope_theta=1e6, **common)
        if self.arch == "llama":
            return tf.LlamaConfig(intermediate_size=self.intermediate, rope_theta=5e5, **common)
        if self.arch == "qwen3_moe":
            return tf.Qwen3MoeConfig(intermediate_size=self.intermediate or self.moe_intermediate, rope_theta=1e6,
                                     num_experts=self.experts, num_experts_per_tok=self.active_experts,
                                     moe_intermediate_size=self.moe_intermediate, decoder_sparse_step=1,
                                     mlp_only_layers=[], norm_topk_prob=True, use_sliding_window=False,
                                     sliding_window=None, **common)
        raise ValueError(f"{self.name}: arch={self.arch!r} has no config builder; use 'llama', 'qwen3' or 'qwen3_moe'")

    # -- parameter counts --------------------------------------------------------------------------
    @property
    def attn_params(self) -> int:
        return self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim + self.heads * self.head_dim * self.hidden

    @property
    def mlp_params_active(self) -> int:
        """MLP weights one token uses: the dense MLP, or the router plus the k active experts."""
        if self.experts:
            return self.hidden * self.experts + self.active_experts * 3 * self.hidden * self.moe_intermediate
        return 3 * self.hidden * self.intermediate

    @property
    def params(self) -> int:
        mlp = (self.hidden * self.experts + self.experts * 3 * self.hidden * self.moe_intermediate if self.experts
               else 3 * self.hidden * self.intermediate)
        return self.layers * (self.attn_params + mlp) + self.vocab * self.hidden * (1 if self.tied else 2)


SHAPES: dict[str, ModelShape] = {s.name: s for s in (
    ModelShape("qwen3-4b", "qwen3", 36, 2560, 32, 8, 128, 9728, 151936, tied=True),
    ModelShape("llama-3.1-8b", "llama", 32, 4096, 32, 8, 128, 14336, 128256),
    ModelShape("qwen3-30b-a3b", "qwen3_moe", 48, 2048, 32, 4, 128, 0, 151936, experts=128, active_experts=8,
               moe_intermediate=768),
    # CPU test shapes (seconds): the same code paths at toy sizes
    ModelShape("tiny-qwen3", "qwen3", 4, 64, 4, 2, 16, 128, 512, tied=True),
    ModelShape("tiny-moe", "qwen3_moe", 2, 64, 4, 2, 16, 0, 512, experts=8, active_experts=2, moe_intermediate=32),
)}


def get_shape(name: str) -> ModelShape:
    if name not in SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {sorted(SHAPES)} (or pass a transformers config "
                         "to ModelShape.from_config)")
    return SHAPES[name]


def _plans(shape: ModelShape, cfg: SWAAConfig | None):
    cfg = SWAAConfig.from_dict(cfg) if cfg is not None else SWAAConfig()
    cfg.validate_layers(shape.layers, shape.name)
    return [cfg.layer(i) for i in range(shape.layers)]


def layer_costs(shape: ModelShape, cfg: SWAAConfig | None, n: int, *, bytes_per: int = 2,
                kv_eviction: bool = True) -> list[dict]:
    """Per layer: prefill FLOPs (linear, attention) of ``n`` tokens, and a decode step's bytes at a cache of ``n``."""
    out = []
    d, hq, hkv = shape.head_dim, shape.heads, shape.kv_heads
    kv_slot = 2 * hkv * d * bytes_per                          # K and V of one token in one layer
    for plan in _plans(shape, cfg):
        pairs = visible_pairs(n, n, plan.window, plan.keep_first)
        dec_window = None if plan.fa_decode else plan.window
        keys_read = visible_pairs(1, n + 1, dec_window, plan.keep_first if dec_window else 0)
        evicts = kv_eviction and dec_window is not None
        stored = min(n + 1, plan.keep_first + dec_window - 1) if evicts else n + 1
        out.append(dict(
            window=plan.window, keep_first=plan.keep_first, fa_decode=plan.fa_decode, evicts=evicts,
            linear_flops=2 * n * (shape.attn_params + shape.mlp_params_active),
            attn_flops=4 * d * hq * pairs, pairs=pairs,
            decode_keys=keys_read, kv_read_bytes=keys_read * kv_slot, kv_stored_bytes=stored * kv_slot,
            weight_bytes=(shape.attn_params + shape.mlp_params_active) * bytes_per))
    return out


def prefill_cost(shape: ModelShape, cfg: SWAAConfig | None, n: int, bytes_per: int = 2) -> dict:
    """Totals of a prefill of ``n`` tokens: FLOPs split into linear / attention / head (one logit row)."""
    rows = layer_costs(shape, cfg, n, bytes_per=bytes_per)
    head = 2 * shape.hidden * shape.vocab
    return dict(linear_flops=sum(r["linear_flops"] for r in rows), attn_flops=sum(r["attn_flops"] for r in rows),
                head_flops=head, flops=sum(r["linear_flops"] + r["attn_flops"] for r in rows) + head,
                kv_bytes=sum(r["kv_stored_bytes"] for r in layer_costs(shape, cfg, n - 1, bytes_per=bytes_per)))


def decode_cost(shape: ModelShape, cfg: SWAAConfig | None, n: int, bytes_per: int = 2,
                kv_eviction: bool = True) -> dict:
    """Bytes of one decode step at a cache of ``n`` tokens: weights, keys read, cache slots kept afterwards."""
    rows = layer_costs(shape, cfg, n, bytes_per=bytes_per, kv_eviction=kv_eviction)
    head = shape.vocab * shape.hidden * bytes_per
    return dict(weight_bytes=sum(r["weight_bytes"] for r in rows) + head,
                kv_read_bytes=sum(r["kv_read_bytes"] for r in rows),
                kv_stored_bytes=sum(r["kv_stored_bytes"] for r in rows),
                evicting_layers=sum(r["evicts"] for r in rows), layers=len(rows))


@dataclass
class Rates:
    """Rates measured on one machine for one model shape (see :func:`swaa.speed.measure.measure_rates`).

    ``attention``: rows ``{"n", "window", "keep_first", "backend", "tflops"}`` (pairs-only TFLOP/s);
    ``linear_s_per_token``: prefill time per token outside attention (a short full-attention prefill less its
    attention); ``decode_overhead_s``: fixed per-layer decode-step time for layers that keep / evict keys.
    """

    device: str
    matmul_tflops: float
    bandwidth_gbps: float
    attention: list = field(default_factory=list)
    linear_s_per_token: float | None = None
    decode_overhead_s: dict = field(default_factory=lambda: {"keep": 0.0, "evict": 0.0})
    overlap: bool = False        # CUDA: the host's per-layer work and the device's byte traffic overlap (max, not sum)
    decode_graphs: bool = False  # decode steps replayed as CUDA graphs over a static cache (GraphDecoder)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Rates":
        return cls(**{k: d[k] for k in ("device", "matmul_tflops", "bandwidth_gbps", "attention",
                                         "linear_s_per_token", "decode_overhead_s", "overlap", "decode_graphs")
                      if k in d})

    def attention_tflops(self, n: int, window: int | None, keep_first: int = 0) -> float:
        """The measured rate of the closest pattern: same kind (full / window), nearest window, then length."""
        same = [r for r in self.attention if (r["window"] is None) == (window is None)]
        if not same:
            raise ValueError(f"no attention rate measured for {'full' if window is None else 'windowed'} "
                             "attention; measure one with swaa.speed.measure.measure_rates(..., windows=[...])")

        def dist(r):
            dw = 0.0 if window is None else abs(math.log2(r["window"] / window))
            return (dw, abs(r["keep_first"] - keep_first) > 0, abs(math.log2(r["n"] / max(n, 1))))
        return min(same, key=dist)["tflops"]


def predict_prefill(shape: ModelShape, cfg: SWAAConfig | None, n: int, rates: Rates, bytes_per: int = 2) -> dict:
    """Predicted prefill seconds: linear part from the measured per-token time (or the matmul rate when that is
    missing), attention per layer from the measured rate of its pattern; plus a roofline (FLOPs / peak rates)."""
    rows = layer_costs(shape, cfg, n, bytes_per=bytes_per)
    attn = sum(r["attn_flops"] / (rates.attention_tflops(n, r["window"], r["keep_first"]) * 1e12) for r in rows)
    lin_flops = sum(r["linear_flops"] for r in rows) + 2 * shape.hidden * shape.vocab
    roof_lin = lin_flops / (rates.matmul_tflops * 1e12)
    lin = n * rates.linear_s_per_token if rates.linear_s_per_token else roof_lin
    return dict(seconds=lin + attn, linear_s=lin, attention_s=attn, roofline_s=roof_lin + attn)


def predict_decode(shape: ModelShape, cfg: SWAAConfig | None, n: int, rates: Rates, bytes_per: int = 2,
                   kv_eviction: bool = True) -> dict:
    """Predicted seconds of one decode step at a cache of ``n``: per-layer overhead and bytes / bandwidth, where the
    bytes are the weights, the keys read and HF's per-step cache copy (read + write of the stored slots).

    On CPU the two add up; on CUDA (``rates.overlap``) kernels are queued while the host works on the next layer,
    so a step takes the longer of the two (batch-1 HF decode is host-bound until the bytes catch up). Under CUDA
    graphs (``rates.decode_graphs``: a static cache, no per-step cache copy) the host is out of the step: the
    device's fixed per-layer kernel time and the bytes add up."""
    rows = layer_costs(shape, cfg, n, bytes_per=bytes_per, kv_eviction=kv_eviction)
    bw = rates.bandwidth_gbps * 1e9
    over = sum(rates.decode_overhead_s["evict" if r["evicts"] else "keep"] for r in rows)
    copy = 0 if rates.decode_graphs else 2
    moved = sum(r["weight_bytes"] + r["kv_read_bytes"] + copy * r["kv_stored_bytes"] for r in rows)
    moved += shape.vocab * shape.hidden * bytes_per
    secs = max(over, moved / bw) if rates.overlap and not rates.decode_graphs else over + moved / bw
    return dict(seconds=secs, overhead_s=over, bytes_s=moved / bw, bytes=moved, kv_stored_bytes=sum(
        r["kv_stored_bytes"] for r in rows))


def packaged_rates_path():
    """The H200 rates shipped with the package (benchmarks/e2e.py's measured rates of every named shape)."""
    from importlib.resources import files
    return files("swaa.speed") / "h200_rates.json"


def load_rates(path, shape: ModelShape) -> Rates:
    """Rates for ``shape`` from a JSON file: benchmarks/e2e.py's (its measured ``rates`` for that model), or
    benchmarks/attention.py's (attention rates of the Qwen3-4B head shape, matmul at 54% of the 718 TFLOP/s bf16
    peak, i.e. the H200 anchor: Qwen3-4B prefill at 32k took 1133 ms with 36 x 14.5 ms of it in attention)."""
    from ..jsonfile import read_json
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected benchmarks/e2e.py or benchmarks/attention.py JSON")
    if data.get("benchmark") == "e2e":
        if shape.name in data.get("rates", {}):
            return Rates.from_dict(data["rates"][shape.name])
        raise ValueError(f"{path} has rates for {sorted(data.get('rates', {}))}, not {shape.name!r}")
    if data.get("benchmark") != "attention":
        raise ValueError(f"{path}: expected benchmarks/e2e.py or benchmarks/attention.py JSON")
    att = [dict(n=r["n"], window=r["window"], keep_first=r["keep_first"], backend=r["backend"], tflops=r["tflops"])
           for r in data["rows"] if r.get("mode") == "fwd" and r.get("shape") == "qwen3-4b" and "tflops" in r
           and r["backend"] in ("sdpa-full", "triton")]
    eff = 0.54 * 718e12
    lin = 2 * (shape.attn_params + shape.mlp_params_active) * shape.layers / eff
    # decode: HF steps at batch 1 on the H200 took ~66 ms (36 layers, full) and ~100 ms with eviction at short caches
    # (benchmarks/results/decode_gpu_h200.json): host-bound, ~1.8 / 2.8 ms per layer
    return Rates(device=data.get("device", "?"), matmul_tflops=718.0, bandwidth_gbps=data["copy_bandwidth_gbps"],
                 attention=att, linear_s_per_token=lin, decode_overhead_s={"keep": 1.8e-3, "evict": 2.8e-3},
                 overlap=True)
