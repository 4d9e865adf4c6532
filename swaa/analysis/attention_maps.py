"""What the model attends to under a SWAA config: attention maps, sink mass per layer, and one-pass "probes"
(loss + sink mass from a single forward) for the widget panel and notebook 01.

Queries and keys are recorded by the "swaa" attention function (after RoPE, as the layer used them), so maps
are exact for the configuration in force, window and sinks included.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention.reference import attention_weights_ref
from ..config import SWAAConfig
from ..integrations import transformers as _tf

__all__ = ["capture_qk", "layer_attention", "attention_maps", "sink_mass", "probe", "Probe"]


@contextlib.contextmanager
def capture_qk():
    """Record every layer's query, key and plan during the forwards inside the block (a list of dicts)."""
    if _tf._CAPTURE is not None:
        raise RuntimeError("capture_qk() is already active")
    _tf._CAPTURE = records = []
    try:
        yield records
    finally:
        _tf._CAPTURE = None


def layer_attention(rec: dict) -> torch.Tensor:
    """Attention probabilities (B, Hq, Lq, Lk), fp32, of one recorded layer call."""
    probs, _ = attention_weights_ref(rec["q"], rec["k"], sliding_window_size=rec["window"],
                                     keep_first=rec["keep_first"], scale=rec["scale"], mask=rec["mask"],
                                     fa_from=rec["fa_from"])
    return probs


def _forward(model, input_ids, cfg, prompt_length=None, capture: bool = True):
    if cfg is not None:
        _tf.apply_swaa(model, cfg)
    elif model.config._attn_implementation != _tf.ATTN_NAME:
        _tf.apply_swaa(model, getattr(model.config, "swaa_config", None))
    ids = input_ids.to(model.device)
    kw = {} if prompt_length is None else {"prompt_length": prompt_length}
    with torch.no_grad(), (capture_qk() if capture else contextlib.nullcontext([])) as recs:
        logits = model(ids, use_cache=False, **kw).logits
    return ids, logits, recs


def attention_maps(model, input_ids, layers, cfg: SWAAConfig | None = None) -> dict[int, torch.Tensor]:
    """{layer: (Hq, L, L) probabilities} for the first sequence of ``input_ids`` under ``cfg``."""
    _, _, recs = _forward(model, input_ids, cfg)
    return {r["layer"]: layer_attention(r)[0].cpu() for r in recs if r["layer"] in set(layers)}


def _sink_mass_of(recs, n_first: int, from_pos: int) -> torch.Tensor:
    out = torch.zeros(len(recs))
    for n, r in enumerate(recs):
        p = layer_attention(r)                                             # (B, H, L, L)
        out[n] = p[:, :, from_pos:, :n_first].sum(-1).mean()
    return out


def sink_mass(model, input_ids, cfg: SWAAConfig | None = None, n_first: int = 1, from_pos: int = 64) -> torch.Tensor:
    """Per layer, the mean attention probability that queries at positions >= ``from_pos`` put on the first
    ``n_first`` tokens (averaged over heads and queries). Returns a (num_layers,) tensor."""
    _, _, recs = _forward(model, input_ids, cfg)
    return _sink_mass_of(recs, n_first, min(from_pos, input_ids.shape[1] - 1))


@dataclass
class Probe:
    config: SWAAConfig
    loss: float                   # mean next-token loss over the whole text
    continuation_loss: float      # over the tokens after prompt_length (the "decode" tokens)
    sink_mass: torch.Tensor       # (num_layers,)
    prompt_length: int


def probe(model, input_ids, cfg: SWAAConfig, prompt_fraction: float = 0.75, n_first: int = 1,
          from_pos: int = 32, with_sink_mass: bool = True) -> Probe:
    """One forward: the text's first ``prompt_fraction`` is the prompt (SWA), the rest plays the answer (decode
    tokens, full attention where ``force_fa_decode`` says so). Returns losses and per-layer sink mass (empty
    when ``with_sink_mass=False``, which skips recording)."""
    n = input_ids.shape[1]
    pl = max(1, int(n * prompt_fraction))
    ids, logits, recs = _forward(model, input_ids, cfg, prompt_length=pl, capture=with_sink_mass)
    mass = _sink_mass_of(recs, n_first, min(from_pos, n - 1)) if with_sink_mass else torch.zeros(0)
    tok_loss = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")[0]
    return Probe(config=cfg, loss=tok_loss.mean().item(), continuation_loss=tok_loss[pl - 1:].mean().item(),
                 sink_mass=mass, prompt_length=pl)
