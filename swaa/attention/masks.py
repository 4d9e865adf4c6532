"""The SWAA attention rule, stated once: predicate, mask_mod, dense masks, block classification, pair counts.

Query at absolute position ``i``, key at absolute position ``j`` (positions count real tokens of one
sequence, never padding), ``W = sliding_window_size``, ``S = keep_first``::

    visible(i, j) = j <= i and (i - j < W or j < S)     # a sliding layer, a prompt token
    visible(i, j) = j <= i                               # a non-sliding layer, or a decode token under FA decode

``W`` counts the query itself (HF's ``sliding_window``; flash-attn's ``window_size=(W-1, 0)``).
``W=None`` is full attention. When there are fewer queries than keys, queries are aligned to the end of
the keys (query ``t`` of ``Lq`` sits at position ``t + Lk - Lq``). W=3, S=1, 6 tokens::

          k0 k1 k2 k3 k4 k5
      q0   x
      q1   x  x
      q2   x  x  x
      q3   x  x  x  x
      q4   x  .  x  x  x
      q5   x  .  .  x  x  x

(ARCHITECTURE.md's picture under the same title shows W=2, S=1: there each query sees itself, one key
before it and the sink. The rule text, HF's ``sliding_window`` and flash-attn's ``(W-1, 0)`` all give the
picture above for W=3; tests pin both pictures.)

Run ``python -m swaa.attention.masks --window 3 --keep-first 1 --length 6`` to print (or ``--png`` to draw) it.
Layout: masks are boolean, ``(B, 1, Lq, Lk)`` for dense ones, True = the pair takes part in attention.
"""
from __future__ import annotations

import argparse

import torch

__all__ = [
    "visible", "make_mask_mod", "dense_mask", "visible_pairs", "block_classes", "check_window",
]


def check_window(sliding_window_size, keep_first) -> None:
    """Validate the two numbers of the rule with messages that name the bad value."""
    w, s = sliding_window_size, keep_first
    if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
        raise ValueError(f"sliding_window_size={w!r} is invalid: use None (full attention) or an int >= 1")
    if isinstance(s, bool) or not isinstance(s, int) or s < 0:
        raise ValueError(f"keep_first={s!r} is invalid: use an int >= 0")


def visible(i, j, window: int | None, keep_first: int = 0):
    """The rule on positions (ints or broadcastable tensors): may query ``i`` see key ``j``?"""
    causal = j <= i
    if window is None:
        return causal
    return causal & ((i - j < window) | (j < keep_first))


def make_mask_mod(window: int | None, keep_first: int = 0, q_offset: int = 0):
    """The rule as a FlexAttention / attention-gym ``mask_mod(b, h, q_idx, kv_idx)``.

    ``q_offset = Lk - Lq`` aligns queries to the end of the keys.
    """

    def swaa_mask_mod(b, h, q_idx, kv_idx):
        return visible(q_idx + q_offset, kv_idx, window, keep_first)

    return swaa_mask_mod


def dense_mask(
    lq: int,
    lk: int,
    window: int | None,
    keep_first: int = 0,
    *,
    base: torch.Tensor | None = None,
    fa_from: "int | torch.Tensor | None" = None,
    device=None,
) -> torch.Tensor:
    """Dense boolean mask ``(B, 1, lq, lk)`` (B = 1 without ``base``).

    ``base``: optional boolean ``(B, 1, lq, lk)`` visibility before SWAA (causal and padding, as transformers
    builds it; also packed sequences). Positions are then counted inside it: a query's position is the number of
    keys it may see minus one, a key's position is its rank among them. So left padding, right padding and
    packed sequences all get sinks at each sequence's first real tokens.
    ``fa_from``: queries at position ``>= fa_from`` (an int, or one per row) use full attention: decode tokens
    under FA decode, answer tokens in FA-decode training.
    """
    if base is None:
        device = device if device is not None else "cpu"
        qpos = torch.arange(lk - lq, lk, device=device).view(1, 1, lq, 1)
        kpos = torch.arange(lk, device=device).view(1, 1, 1, lk)
        allowed = None
    else:
        if base.dtype != torch.bool or base.dim() != 4 or base.shape[-2:] != (lq, lk):
            raise ValueError(f"base mask must be boolean (B, 1, {lq}, {lk}), got {tuple(base.shape)} {base.dtype}")
        allowed = base
        kpos = base.cumsum(-1, dtype=torch.int32) - 1       # rank of each visible key, (B, 1, lq, lk)
        qpos = kpos[..., -1:]                                # the query's own position (it sees itself last)
    vis = visible(qpos, kpos, window, keep_first)
    if fa_from is not None and window is not None:
        if isinstance(fa_from, torch.Tensor):
            fa_from = fa_from.to(qpos.device).view(-1, 1, 1, 1)
        vis = vis | ((qpos >= fa_from) & (kpos <= qpos))
    if allowed is not None:
        vis = vis & allowed
    return vis


def visible_pairs(lq: int, lk: int, window: int | None, keep_first: int = 0) -> int:
    """Number of (query, key) pairs the rule keeps, in closed form (for FLOP counts; no N x N tensor)."""
    off = lk - lq
    total = 0
    # per query at position p = t + off (t in [0, lq)): keys 0..p, of which visible: window part + sinks
    p0, p1 = max(off, 0), lk - 1          # positions of queries that see at least one key
    if p1 < p0:
        return 0
    if window is None:
        n = p1 - p0 + 1
        return n * (p0 + p1 + 2) // 2
    for lo, hi, f in _piecewise(p0, p1, window, keep_first):
        total += f(lo, hi)
    return total


def _piecewise(p0, p1, w, s):
    # count(p) = min(p+1, w) + min(s, max(p+1-w, 0)) ; sum over p in [p0, p1] in closed form
    def tri(a, b):  # sum_{p=a}^{b} (p+1)
        return (b - a + 1) * (a + b + 2) // 2 if b >= a else 0

    pieces = []
    # region A: p + 1 <= w -> count = p + 1
    a_hi = min(p1, w - 1)
    if a_hi >= p0:
        pieces.append((p0, a_hi, tri))
    # region B: p + 1 > w -> count = w + min(s, p + 1 - w)
    b_lo = max(p0, w)
    if b_lo <= p1:
        # sub-region p + 1 - w <= s -> w + p + 1 - w = p + 1
        c_hi = min(p1, w + s - 1)
        if c_hi >= b_lo:
            pieces.append((b_lo, c_hi, tri))
        d_lo = max(b_lo, w + s)
        if d_lo <= p1:
            pieces.append((d_lo, p1, lambda a, b: (b - a + 1) * (w + s)))
    return pieces


def block_classes(lq: int, lk: int, window: int | None, keep_first: int, block_q: int, block_k: int,
                  device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Classify (query block, key block) tiles: returns ``(partial, full)`` boolean ``(nq, nk)``.

    ``full``: every pair in the tile is visible (runs unmasked). ``partial``: some but not all pairs are
    (runs with the mask). Tiles in neither are never visited. Costs ``nq * nk`` booleans, never ``lq * lk``.
    """
    off = lk - lq
    nq, nk = -(-lq // block_q), -(-lk // block_k)
    qa = torch.arange(nq, device=device).view(-1, 1) * block_q + off                 # first query position
    qz = torch.clamp(qa - off + block_q, max=lq) - 1 + off                            # last query position
    ka = torch.arange(nk, device=device).view(1, -1) * block_k                        # first key position
    kz = torch.clamp(ka + block_k, max=lk) - 1                                        # last key position
    # any visible pair: some j <= i, and either the closest pair is in the window or a sink is reachable
    causal_any = ka <= qz
    if window is None:
        any_vis = causal_any
        all_vis = kz <= qa
    else:
        near = torch.clamp(qa - kz, min=0)            # smallest i - j over pairs with j <= i (0 if they overlap)
        any_vis = causal_any & ((near < window) | (ka < keep_first))
        all_vis = (kz <= qa) & ((qz - ka < window) | (kz < keep_first))
    all_vis = all_vis & (qa >= 0)                     # a query at negative position sees nothing
    return any_vis & ~all_vis, all_vis


def draw(window: int | None, keep_first: int, length: int) -> str:
    m = dense_mask(length, length, window, keep_first)[0, 0]
    head = "     " + "".join(f"k{j:<2}" for j in range(length))
    rows = [f"q{i:<3} " + "".join(("x" if m[i, j] else ("." if j <= i else " ")) + "  " for j in range(length))
            for i in range(length)]
    rows = [r.rstrip() for r in rows]
    return "\n".join([head] + rows)


def _main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Print or draw the SWAA mask.")
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--keep-first", type=int, default=1)
    ap.add_argument("--length", type=int, default=6)
    ap.add_argument("--png", default=None, help="write a picture of the mask here")
    a = ap.parse_args(argv)
    check_window(a.window, a.keep_first)
    print(draw(a.window, a.keep_first, a.length))
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        m = dense_mask(a.length, a.length, a.window, a.keep_first)[0, 0]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set(title=f"W={a.window}, S={a.keep_first}", xlabel="key", ylabel="query")
        fig.savefig(a.png, dpi=120, bbox_inches="tight")
        print(f"wrote {a.png}")


if __name__ == "__main__":
    _main()
