"""Long-context data. For now: real offline text that exists on every machine (Debian's license texts, which
base-files ships everywhere, and Python's own ``pydoc_data.topics``), for perplexity studies of SWAA."""
from __future__ import annotations

from pathlib import Path

__all__ = ["offline_text", "offline_token_ids", "TEXT_SOURCES"]

_LICENSES = Path("/usr/share/common-licenses")
TEXT_SOURCES = ("gpl3", "licenses", "pydoc")


def _pydoc_text() -> str:
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def offline_text(source: str = "gpl3") -> str:
    """``gpl3``: the GPL-3 text (~5.6k words); ``licenses``: every license text Debian ships, concatenated;
    ``pydoc``: Python's help topics (~1.2M characters). Falls back to ``pydoc`` where Debian's files are absent."""
    if source not in TEXT_SOURCES:
        raise ValueError(f"source={source!r} is not one of {TEXT_SOURCES}")
    if source == "gpl3" and (_LICENSES / "GPL-3").exists():
        return (_LICENSES / "GPL-3").read_text()
    if source == "licenses" and _LICENSES.is_dir():
        files = sorted(p for p in _LICENSES.iterdir() if p.is_file())
        return "\n\n".join(p.read_text(errors="replace") for p in files)
    return _pydoc_text()


def offline_token_ids(tokenizer, n_tokens: int, source: str = "gpl3", offset: int = 0):
    """The first ``n_tokens`` token ids (after ``offset``) of an offline text, as a (1, n_tokens) LongTensor."""
    import torch

    ids = tokenizer(offline_text(source), add_special_tokens=False)["input_ids"]
    if len(ids) < offset + n_tokens and source != "pydoc":
        ids = ids + tokenizer("\n\n" + _pydoc_text(), add_special_tokens=False)["input_ids"]
    if len(ids) < offset + n_tokens:
        raise ValueError(f"n_tokens={n_tokens} (offset {offset}) exceeds the {len(ids)} tokens of the offline text")
    return torch.tensor([ids[offset:offset + n_tokens]])
