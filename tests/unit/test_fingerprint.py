"""Model fingerprints: equal for the same weights wherever they are saved, different for other weights, another
tokenizer or chat template, and unchanged by how a model is run (its SWAA config)."""
import shutil

import pytest
import torch

from swaa import SWAAConfig, apply_swaa
from swaa.store.fingerprint import _sampled_blocks, _sampled_file_hash, fingerprint, model_fingerprint, readable_name
from tests.integration.tiny_models import make_model


def _save(model, path):
    model.save_pretrained(path)
    (path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    return path


def test_folder_fingerprint_follows_the_files_not_the_path(tmp_path):
    a = _save(make_model("llama", seed=0), tmp_path / "a" / "merged")
    b = _save(make_model("llama", seed=1), tmp_path / "b" / "merged")
    c = tmp_path / "c" / "merged"
    shutil.copytree(a, c)
    assert readable_name(a) == readable_name(b) == "merged" and readable_name(None) == "default"
    assert model_fingerprint(a) == model_fingerprint(str(c)) != model_fingerprint(b)
    weights = c / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1                                 # one bit in the middle of the weights
    weights.write_bytes(bytes(data))
    assert model_fingerprint(c) != model_fingerprint(a)       # the cache follows the file's size and mtime
    shutil.copy(a / "model.safetensors", weights)
    assert model_fingerprint(c) == model_fingerprint(a)
    (c / "chat_template.jinja").write_text("{{ messages[0]['content'] }}!")
    assert model_fingerprint(c) != model_fingerprint(a)       # another chat template is another model here
    (c / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="holds no weights file"):
        model_fingerprint(c)
    with pytest.raises(ValueError, match="neither a local folder nor a hub id in the local hub cache"):
        model_fingerprint("nobody/no-such-model")


def test_large_weights_files_are_sampled_at_both_ends_and_in_between(tmp_path):
    size = (12 << 20) + 333
    blocks = _sampled_blocks(size)
    assert blocks[0] == (0, 2 << 20) and blocks[-1] == (size - (2 << 20), 2 << 20) and len(blocks) == 18
    unseen = [b[0] - (a[0] + a[1]) for a, b in zip(blocks, blocks[1:])]   # bytes between one block and the next
    assert min(unseen) >= 0 and max(unseen) < size / 15
    assert sum(n for _, n in blocks) == (5 << 20) and _sampled_blocks(1000) == [(0, 1000)]
    path = tmp_path / "w.safetensors"
    base = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path.write_bytes(base)
    ref = _sampled_file_hash(path, size)
    for offset, length in blocks:                            # a change in any hashed block is seen
        data = bytearray(base)
        data[offset + length // 2] ^= 1
        path.write_bytes(bytes(data))
        assert _sampled_file_hash(path, size) != ref, offset


def test_model_in_memory(tmp_path):
    m0, m0b, m1 = make_model("llama", seed=0), make_model("llama", seed=0), make_model("llama", seed=1)
    fp = model_fingerprint(m0)
    assert fp == model_fingerprint(m0b) != model_fingerprint(m1)
    apply_swaa(m0, SWAAConfig(sliding_window_size=4, keep_first=1))   # how it runs is keyed by the caller
    m0.config.use_cache = False
    assert model_fingerprint(m0) == fp
    with torch.no_grad():
        m0.model.layers[2].self_attn.q_proj.weight[0, 0] += 1e-3
    assert model_fingerprint(m0) != fp
    assert model_fingerprint(m0b.to(torch.bfloat16)) != fp
    assert fingerprint("a", {"x": 1, "y": [2]}) == fingerprint("a", {"y": [2], "x": 1}) != fingerprint("a", {"x": 1})
