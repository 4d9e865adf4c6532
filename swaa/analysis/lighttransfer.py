"""LightTransfer baseline: per-layer "lazy ratios" under full attention -> which layers may slide (non_sliding_layers).

A head is *lazy* when its queries put almost all their attention on a few first tokens (sinks) and on the most
recent ones, i.e. on exactly what a sliding layer with sinks keeps. For each of the last ``w_last`` queries of a
sequence (query at absolute position ``i``, keys ``j <= i``), the kept keys are the SWAA rule with
``W = w_recent`` and ``S = w_sink``::

    kept(i, j) = j <= i and (i - j < w_recent or j < w_sink)       # the query itself counts in w_recent

    lazy_ratio(head) = mean over the last w_last queries of exp(LSE over kept keys - LSE over all causal keys)

computed in the log domain from (w_last x L) scores, chunked over keys, never an L x L matrix. Tensors are
(batch, heads, seq, head_dim); GQA query head ``h`` reads KV head ``h // (Hq // Hkv)``.

Defaults. LightTransfer uses ``w_sink=4, w_recent=1020, w_last=64`` (:data:`PAPER_PARAMS`) for prompts of several
thousand tokens. The default model is evaluated on 512-1024-token prompts, where a 1024-key window would see
everything, so :data:`SMALL_PARAMS` are ``w_sink=4, w_recent=64, w_last=16``: the lazy ratio is then exactly the
full-attention mass a layer keeps under ``SWAAConfig(sliding_window_size=64, keep_first=4)``, the setting that
hurts the default model most among those with sinks (answer NLL 2.83 vs 0.93 for full attention in
``data/results/smollm2_synthetic.csv``); 16 queries cover a synthetic answer and the chat template around it.
:func:`lazy_params_for` gives the same for any config. A sample needs at least ``w_sink + w_recent + w_last``
tokens (so that even the earliest scored query has keys outside sinks + window); shorter ones are skipped and
counted.

Selection as in LightTransfer: per sample, layers are ranked by lazy ratio (mean over heads); the laziest
``top_p`` fraction of the layers gets one vote; a layer's frequency is its votes / samples used.
:func:`lazy_config` makes the ``ratio`` fraction of layers with the highest frequency sliding (ties: higher mean
lazy ratio, then lower layer index) and keeps every other layer at full attention.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from ..config import SWAAConfig
from ..store.fingerprint import fingerprint, model_fingerprint

__all__ = ["PAPER_PARAMS", "SMALL_PARAMS", "lazy_params_for", "lazy_ratio", "sample_lazy_ratios", "chat_ids",
           "usable_samples", "lazy_layer_freqs", "lazy_config", "interleaved_layers", "load_freqs"]

PAPER_PARAMS = dict(w_sink=4, w_recent=1020, w_last=64)
SMALL_PARAMS = dict(w_sink=4, w_recent=64, w_last=16)


def lazy_params_for(cfg: SWAAConfig, w_last: int = 16) -> dict:
    """Lazy-ratio parameters that measure the attention mass ``cfg``'s sliding layers keep (its window and sinks)."""
    if cfg.sliding_window_size is None:
        raise ValueError("lazy_params_for needs a sliding config (sliding_window_size=None is full attention); "
                         "pass e.g. SWAAConfig(sliding_window_size=64, keep_first=4)")
    return dict(w_sink=cfg.keep_first, w_recent=cfg.sliding_window_size, w_last=w_last)


def _check_params(w_sink: int, w_recent: int, w_last: int) -> None:
    for name, v, lo in (("w_sink", w_sink, 0), ("w_recent", w_recent, 1), ("w_last", w_last, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}={v!r} is invalid: use an int >= {lo}")


def min_length(w_sink: int, w_recent: int, w_last: int) -> int:
    """Shortest sequence whose every scored query has keys outside the sinks and the window."""
    return w_sink + w_recent + w_last


def lazy_ratio(q: torch.Tensor, k: torch.Tensor, *, w_sink: int, w_recent: int, w_last: int, scale: float | None = None,
               chunk: int = 4096) -> torch.Tensor:
    """Lazy ratio (B, Hq) of each query head from queries q (B, Hq, Lq, D) and keys k (B, Hkv, L, D).

    The queries are the last ``Lq`` positions of the sequence (end-aligned with the keys, as recorded by
    :func:`swaa.analysis.attention_maps.capture_qk`); only the last ``w_last`` of them are scored. No padding: one sequence per row.
    """
    _check_params(w_sink, w_recent, w_last)
    b, hq, lq, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    if hq % hkv:
        raise ValueError(f"{hq} query heads are not a multiple of {hkv} KV heads")
    if lq < w_last or lk < lq:
        raise ValueError(f"need at least w_last={w_last} queries and no more queries than keys (got {lq} queries, "
                         f"{lk} keys); lower w_last or use a longer input")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    g = hq // hkv
    qs = (q[:, :, -w_last:].float() * scale).reshape(b, hkv, g * w_last, d)   # (B, Hkv, G*w, D), head-major
    i = torch.arange(lk - w_last, lk, device=q.device).repeat(g)[:, None]      # (G*w, 1) absolute query positions
    neg = torch.tensor(float("-inf"), device=q.device)
    lse_all = torch.full((b, hkv, g * w_last), float("-inf"), device=q.device)
    lse_kept = lse_all.clone()
    for start in range(0, lk, chunk):
        kc = k[:, :, start:start + chunk].float()                              # (B, Hkv, c, D)
        s = qs @ kc.transpose(-1, -2)                                          # (B, Hkv, G*w, c)
        j = torch.arange(start, start + kc.shape[2], device=q.device)[None]    # (1, c)
        causal = j <= i
        kept = causal & ((i - j < w_recent) | (j < w_sink))
        lse_all = torch.logaddexp(lse_all, torch.logsumexp(torch.where(causal, s, neg), -1))
        lse_kept = torch.logaddexp(lse_kept, torch.logsumexp(torch.where(kept, s, neg), -1))
    ratio = torch.exp(lse_kept - lse_all).reshape(b, hkv, g, w_last)          # (B, Hkv, G, w)
    return ratio.mean(-1).reshape(b, hq)


def sample_lazy_ratios(model, input_ids, *, w_sink: int, w_recent: int, w_last: int) -> torch.Tensor:
    """(num_layers, Hq) lazy ratios of one sequence ``input_ids`` (1, L) under full attention.

    Runs one forward under the "swaa" attention with a full-attention config, recording each layer's query and key
    after RoPE; the model's previous SWAA config (if any) is put back afterwards."""
    from .attention_maps import capture_qk
    from ..integrations.transformers import apply_swaa, get_swaa_config

    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1).to(model.device)
    prev = get_swaa_config(model.config)
    apply_swaa(model, SWAAConfig())
    rows = {}
    try:
        with torch.no_grad(), capture_qk() as recs:
            model(ids, use_cache=False)
            for r in recs:
                rows[r["layer"]] = lazy_ratio(r["q"], r["k"], w_sink=w_sink, w_recent=w_recent, w_last=w_last,
                                              scale=r["scale"])[0].cpu()
    finally:
        if prev is not None:
            apply_swaa(model, prev)
    return torch.stack([rows[n] for n in sorted(rows)])


def chat_ids(tok, prompt: str, answer: str) -> list[int]:
    """Token ids of ``prompt`` (user) + ``answer`` (assistant) through the tokenizer's chat template."""
    msgs = [{"role": "user", "content": str(prompt)}, {"role": "assistant", "content": str(answer)}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def _laziest(layer_ratio, k: int) -> list[int]:
    order = sorted(range(len(layer_ratio)), key=lambda n: (-layer_ratio[n], n))
    return sorted(order[:k])


def usable_samples(seqs, *, w_sink: int, w_recent: int, w_last: int) -> tuple[list[int], int]:
    """The indices of the token sequences long enough to score (see :func:`min_length`), and that length; none is an
    error naming the lengths."""
    need = min_length(w_sink, w_recent, w_last)
    use = [k for k, s in enumerate(seqs) if len(s) >= need]
    if not use:
        lengths = sorted(len(s) for s in seqs)
        raise ValueError(f"all {len(seqs)} samples are shorter than w_sink + w_recent + w_last = {w_sink} + {w_recent}"
                         f" + {w_last} = {need} tokens (lengths {lengths[0]}..{lengths[-1]}); use longer prompts "
                         "(e.g. synthetic:1024) or smaller w_recent / w_last")
    return use, need


def lazy_layer_freqs(model, tok, dataset, *, w_sink: int = 4, w_recent: int = 64, w_last: int = 16,
                     top_p: float = 0.5, n: int | None = None, rows_path=None, out=None, model_name: str = "default",
                     progress: bool = True) -> dict:
    """Lazy-layer frequencies over the first ``n`` rows of ``dataset`` (DataFrame or path with prompt/answer).

    Per-sample ratios are appended to ``rows_path`` (JSONL, resumable) when given; the summary (the paper's
    ``*_lazy_layers_freq.json``: layer -> frequency, plus model, parameters, samples used and skipped, mean ratios
    per layer and per head) is returned and written to ``out`` when given."""
    import pandas as pd

    from ..evaluation.data import load_dataset, validate_dataset
    from ..store.rows import atomic_write_text, run_resumable

    _check_params(w_sink, w_recent, w_last)
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} is invalid: use the fraction of layers voted lazy per sample, in (0, 1]")
    df = validate_dataset(dataset if isinstance(dataset, pd.DataFrame) else load_dataset(dataset))
    if n is not None:
        df = df.iloc[:n]
    ids = [row.get("id", f"row{k}") for k, (_, row) in enumerate(df.iterrows())]
    seqs = [chat_ids(tok, p, a) for p, a in zip(df["prompt"], df["answer"])]
    use, need = usable_samples(seqs, w_sink=w_sink, w_recent=w_recent, w_last=w_last)
    skipped = [dict(id=str(ids[k]), length=len(seqs[k])) for k, s in enumerate(seqs) if len(s) < need]
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(seqs)} samples are shorter than {need} tokens "
                      f"(w_sink + w_recent + w_last) and are skipped", stacklevel=2)

    model_fp = model_fingerprint(model)

    def key(k):                                  # the model's weights, the parameters and the sample's tokens
        return f"{model_fp}|{w_sink}|{w_recent}|{w_last}|{fingerprint(seqs[k])}"

    def compute(k):
        r = sample_lazy_ratios(model, [seqs[k]], w_sink=w_sink, w_recent=w_recent, w_last=w_last)
        return dict(id=str(ids[k]), length=len(seqs[k]), head_ratio=r.tolist())

    if rows_path is not None:
        rows = run_resumable(rows_path, use, key=key, compute=compute, progress=progress, desc="lazy ratios")
    else:
        rows = [compute(k) for k in use]
    heads = torch.tensor([r["head_ratio"] for r in rows], dtype=torch.float64)      # (N, layers, Hq)
    layer_ratio = heads.mean(-1)                                                    # (N, layers)
    n_layers = heads.shape[1]
    k = max(1, min(n_layers, math.floor(top_p * n_layers + 0.5)))
    votes = [0] * n_layers
    for lr in layer_ratio.tolist():
        for layer in _laziest(lr, k):
            votes[layer] += 1
    res = dict(model=model_name, model_fingerprint=model_fp,
               params=dict(w_sink=w_sink, w_recent=w_recent, w_last=w_last, top_p=top_p, top_k_layers=k),
               num_layers=n_layers, num_heads=heads.shape[2], n_used=len(rows), n_skipped=len(skipped),
               min_length=need, skipped=skipped,
               freq={str(layer): votes[layer] / len(rows) for layer in range(n_layers)},
               count={str(layer): votes[layer] for layer in range(n_layers)},
               mean_lazy_ratio={str(layer): v for layer, v in enumerate(layer_ratio.mean(0).tolist())},
               head_lazy_ratio=heads.mean(0).tolist())
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(res, indent=1) + "\n")
    return res


def load_freqs(path) -> dict:
    """A frequency JSON written by :func:`lazy_layer_freqs`."""
    return json.loads(Path(path).read_text())


def lazy_config(freqs: dict, ratio: float, base: SWAAConfig | None = None) -> SWAAConfig:
    """The SWAAConfig whose lazy layers slide and all others stay at full attention.

    ``freqs``: the dict of :func:`lazy_layer_freqs` (or its JSON path), or a plain ``{layer: frequency}`` mapping.
    ``ratio``: fraction of the layers made sliding (lazy), rounded half up to a count of layers.
    ``base``: window, sinks and FA decode of the sliding layers; default (with a full dict) the window and sinks
    the ratios were measured with (``w_recent``, ``w_sink``). Ties: higher mean lazy ratio, then lower index."""
    if isinstance(freqs, (str, Path)):
        freqs = load_freqs(freqs)
    full = isinstance(freqs, dict) and "freq" in freqs
    table = freqs["freq"] if full else freqs
    try:
        f = {int(layer): float(v) for layer, v in table.items()}
    except (TypeError, ValueError, AttributeError):
        raise ValueError(f"freqs must map layer indices to frequencies, got {str(freqs)[:80]!r}") from None
    n = len(f)
    if sorted(f) != list(range(n)):
        raise ValueError(f"freqs must cover layers 0..{n - 1} exactly once; got layers {sorted(f)}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise ValueError(f"ratio={ratio!r} is invalid: use the fraction of layers made sliding, in [0, 1]")
    mean = {int(k): v for k, v in freqs.get("mean_lazy_ratio", {}).items()} if full else {}
    if base is None:
        if not full:
            raise ValueError("lazy_config needs base=SWAAConfig(sliding_window_size=..., keep_first=...) when "
                             "freqs is a plain {layer: frequency} mapping")
        p = freqs["params"]
        base = SWAAConfig(sliding_window_size=p["w_recent"], keep_first=p["w_sink"])
    if base.sliding_window_size is None:
        raise ValueError("base has sliding_window_size=None (full attention), so lazy layers would not slide; "
                         "pass base=SWAAConfig(sliding_window_size=64, keep_first=4) or similar")
    n_lazy = math.floor(ratio * n + 0.5)
    order = sorted(range(n), key=lambda layer: (-f[layer], -mean.get(layer, 0.0), layer))
    lazy = set(order[:n_lazy])
    return SWAAConfig(sliding_window_size=base.sliding_window_size, keep_first=base.keep_first,
                      force_fa_decode=base.force_fa_decode,
                      non_sliding_layers=[layer for layer in range(n) if layer not in lazy])


def interleaved_layers(num_layers: int, n_full: int) -> list[int]:
    """``n_full`` full-attention layers spread evenly, ending at the last layer (15 of 30: 1, 3, ..., 29 = "SF"*15)."""
    if not 0 <= n_full <= num_layers:
        raise ValueError(f"n_full={n_full} must be between 0 and num_layers={num_layers}")
    return [(m + 1) * num_layers // n_full - 1 for m in range(n_full)]
