"""Fingerprints of what produces a result: a model (a folder, a hub id or a model in memory), settings, row content.

Every stored result is keyed by them (see :mod:`swaa.store.rows`), so two different models that share a folder name
never share a row, and the same model finds its rows again wherever it is saved.

- A model folder: the full text of its small files (``config.json``, ``generation_config.json``, the tokenizer
  files and chat template, remote code) and, for each weights file, its name, its size and a hash of its first and
  last 2 MiB plus 16 blocks of 64 KiB spread through it (about 5 MiB read per file, whatever the model's size). The
  result is cached per folder and per (name, size, mtime) of those files.
- A hub id resolves to its folder in the local hub cache; ``None`` to the default model's folder.
- A model in memory (a notebook passes models around; SFT and self-distillation receive one): its config (without
  the fields that say how it is run rather than what it is: ``swaa_config``, the attention implementation,
  ``use_cache``, its origin path and the transformers version), its generation config, and from every parameter its
  name, dtype, shape and 257 elements evenly spaced through it. A change confined to elements between those samples
  goes unseen; any training step or merged adapter changes them all. The SWAA config is left out because every
  caller keys the attention setting it runs under itself.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["fingerprint", "model_fingerprint", "model_folder", "readable_name"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".py", ".tiktoken")   # config, tokenizer, template, code
_EDGE, _PROBES, _PROBE = 2 << 20, 16, 64 << 10
_RUNTIME_KEYS = {"_name_or_path", "transformers_version", "swaa_config", "use_cache", "_attn_implementation",
                 "_attn_implementation_internal", "attn_implementation", "_commit_hash", "dtype", "torch_dtype"}
_SAMPLES = 257
_CACHE: dict = {}


def fingerprint(*parts) -> str:
    """16 hex digits of SHA-256 over ``parts`` (strings as they are, anything else as sorted JSON)."""
    h = hashlib.sha256()
    for p in parts:
        h.update((p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str)).encode())
        h.update(b"\x1f")
    return h.hexdigest()[:16]


def readable_name(name_or_path) -> str:
    """The name shown beside a fingerprint: a folder's or hub id's last part; ``default`` for the default model."""
    return "default" if name_or_path is None else str(name_or_path).rstrip("/").split("/")[-1]


def model_folder(name_or_path) -> Path:
    """The local folder of a model: the default model's for None, a folder as it is, a hub id's cached snapshot."""
    if name_or_path is None:
        from ..models import default_model_path
        return default_model_path()
    path = Path(name_or_path)
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception as e:
        raise ValueError(f"model {str(name_or_path)!r} is neither a local folder nor a hub id in the local hub cache "
                         f"({type(e).__name__}); load it once (load_model) or give its folder") from None


def model_fingerprint(model) -> str:
    """16 hex digits identifying ``model``: a folder path, a hub id, None (the default model) or a loaded model."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return _folder_fingerprint(model_folder(model))
    return _module_fingerprint(model)


def _sampled_blocks(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the parts of a weights file that are hashed: all of a small file; else both ends and
    evenly spaced blocks in between."""
    if size <= 2 * _EDGE + _PROBES * _PROBE:
        return [(0, size)]
    gap = size - 2 * _EDGE - _PROBE                        # where the evenly spaced blocks may start, after the head
    return ([(0, _EDGE)] + [(_EDGE + k * gap // (_PROBES - 1), _PROBE) for k in range(_PROBES)]
            + [(size - _EDGE, _EDGE)])


def _sampled_file_hash(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for offset, length in _sampled_blocks(size):
            f.seek(offset)
            h.update(f.read(length))
    return h.hexdigest()


def _folder_fingerprint(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES + _TEXT_SUFFIXES)
    stats = tuple((p.name, st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise ValueError(f"{folder} holds no weights file ({', '.join(WEIGHT_SUFFIXES)}); a model folder needs its "
                         "weights and config.json")
    key = (str(folder), stats)
    if key not in _CACHE:
        parts = []
        for p, (name, size, _) in zip(files, stats):
            if p.suffix in WEIGHT_SUFFIXES:
                parts.append([name, size, _sampled_file_hash(p, size)])
            else:
                parts.append([name, hashlib.sha256(p.read_bytes()).hexdigest()])
        _CACHE[key] = fingerprint("folder", parts)
    return _CACHE[key]


def _module_fingerprint(model) -> str:
    import torch

    config = {k: v for k, v in model.config.to_dict().items() if k not in _RUNTIME_KEYS}
    gen = getattr(model, "generation_config", None)
    gen = {k: v for k, v in gen.to_dict().items() if k != "transformers_version"} if gen is not None else None
    h = hashlib.sha256(fingerprint("module", config, gen).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            k = min(flat.numel(), _SAMPLES)
            idx = (torch.arange(k, device=flat.device) * (flat.numel() - 1)) // max(k - 1, 1)   # first to last
            h.update(f"{name}|{p.dtype}|{tuple(p.shape)}".encode())
            h.update(flat[idx].cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
