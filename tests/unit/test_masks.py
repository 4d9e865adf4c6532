"""The rule in masks.py: the literal picture, closed-form pair counts, tile classification, mask_mod."""
import pytest
import torch

from swaa.attention.masks import block_classes, dense_mask, make_mask_mod, visible_pairs

# W=3, S=1, 6 tokens: a query sees itself, the 2 keys before it, and the sink k0
EXPECTED_W3_S1 = torch.tensor([
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 0, 1, 1, 1, 0],
    [1, 0, 0, 1, 1, 1],
], dtype=torch.bool)

# the picture drawn in ARCHITECTURE.md (titled W=3, S=1) is this one: W=2, S=1
EXPECTED_W2_S1 = torch.tensor([
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 0, 1, 1, 0, 0],
    [1, 0, 0, 1, 1, 0],
    [1, 0, 0, 0, 1, 1],
], dtype=torch.bool)


def test_literal_6x6_mask():
    assert torch.equal(dense_mask(6, 6, 3, 1)[0, 0], EXPECTED_W3_S1)
    assert torch.equal(dense_mask(6, 6, 2, 1)[0, 0], EXPECTED_W2_S1)


def test_queries_align_to_the_end_of_the_keys():
    # the last 2 queries of the picture, against all 6 keys
    assert torch.equal(dense_mask(2, 6, 3, 1)[0, 0], EXPECTED_W3_S1[4:])
    # more queries than keys: the first queries sit at negative positions and see nothing
    m = dense_mask(4, 2, None)[0, 0]
    assert torch.equal(m, torch.tensor([[0, 0], [0, 0], [1, 0], [1, 1]], dtype=torch.bool))


def _brute(lq, lk, w, s):
    m = torch.zeros(lq, lk, dtype=torch.bool)
    for t in range(lq):
        i = t + lk - lq
        for j in range(lk):
            m[t, j] = j <= i and (w is None or i - j < w or j < s)
    return m


@pytest.mark.parametrize("lq, lk", [(1, 1), (6, 6), (17, 17), (1, 339), (113, 203), (203, 113), (64, 64)])
@pytest.mark.parametrize("w, s", [(None, 0), (1, 0), (1, 1), (3, 1), (16, 4), (16, 20), (500, 2), (7, 7)])
def test_dense_mask_and_pair_counts_match_brute_force(lq, lk, w, s):
    brute = _brute(lq, lk, w, s)
    dense = dense_mask(lq, lk, w, s)[0, 0]
    assert torch.equal(dense, brute)
    assert visible_pairs(lq, lk, w, s) == int(brute.sum())
    mm = make_mask_mod(w, s, q_offset=lk - lq)
    qi = torch.arange(lq).view(-1, 1)
    kj = torch.arange(lk).view(1, -1)
    assert torch.equal(mm(0, 0, qi, kj) & (qi + lk - lq >= 0), brute)


@pytest.mark.parametrize("lq, lk, bq, bk", [(1023, 1023, 128, 128), (113, 203, 16, 32), (1, 339, 16, 16),
                                            (203, 113, 32, 16), (640, 640, 64, 64)])
@pytest.mark.parametrize("w, s", [(None, 0), (1, 0), (16, 4), (16, 200), (129, 1), (100, 0), (5000, 3)])
def test_tile_classes_are_exact_about_what_they_skip(lq, lk, bq, bk, w, s):
    """Tiles marked full are entirely visible; tiles left out contain no visible pair; partial tiles
    contain at least one visible and one hidden pair (so no work is wasted and nothing is lost)."""
    partial, full = block_classes(lq, lk, w, s, bq, bk)
    m = dense_mask(lq, lk, w, s)[0, 0]          # equal to the brute force above
    for a in range(partial.shape[0]):
        for b in range(partial.shape[1]):
            tile = m[a * bq:(a + 1) * bq, b * bk:(b + 1) * bk]
            if full[a, b]:
                assert tile.all(), (a, b)
            elif partial[a, b]:
                assert tile.any(), (a, b)
            else:
                assert not tile.any(), (a, b)
    assert not (partial & full).any()


def test_sliding_window_tiles_are_never_all_visited():
    partial, full = block_classes(32768, 32768, 2048, 100, 128, 128)
    visited = (partial | full).sum(-1)
    assert visited.max() <= 2048 // 128 + 2 + 1        # window tiles + one sink tile + the diagonal edge
    assert (full.sum(-1)[32:] >= 2048 // 128 - 2).all()  # interior tiles run unmasked


def test_base_mask_counts_positions_inside_it():
    # left padding by 2: the row's real tokens are keys 2..7, so its sink is key 2
    base = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
    base[..., :2] = False
    m = dense_mask(8, 8, 3, 1, base=base)[0, 0]
    assert torch.equal(m[2:, 2:], EXPECTED_W3_S1)
    assert not m[:, :2].any() and not m[:2].any()


def test_fa_from_gives_full_attention_to_later_queries():
    m = dense_mask(6, 6, 3, 1, fa_from=4)[0, 0]
    assert torch.equal(m[:4], EXPECTED_W3_S1[:4])
    assert torch.equal(m[4:], torch.ones(6, 6, dtype=torch.bool).tril()[4:])
    per_row = dense_mask(6, 6, 2, 0, fa_from=torch.tensor([5, 2]), base=torch.ones(2, 1, 6, 6, dtype=torch.bool).tril())
    assert per_row[0, 0, 4].sum() == 2 and per_row[0, 0, 5].sum() == 6
    assert per_row[1, 0, 1].sum() == 2 and per_row[1, 0, 2].sum() == 3


def test_module_draws_its_mask(capsys, tmp_path):
    from swaa.attention.masks import _main
    _main(["--window", "3", "--keep-first", "1", "--length", "6", "--png", str(tmp_path / "m.png")])
    out = capsys.readouterr().out
    assert "q5   x  .  .  x  x  x" in out
    assert (tmp_path / "m.png").stat().st_size > 1000
