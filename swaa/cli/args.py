"""Typed options of the `swaa` command (numbers in range, devices this machine has, output folders that can be made,
existing files) and the one error a user mistake raises.

A user mistake raises :class:`UsageError` (a ValueError) naming the option and the value; the command prints it as
one line, ``swaa CMD: error: ...``, and exits with code 2. These types run while argparse reads the command line, so
a bad number or path is refused before any work; :mod:`swaa.cli.checks` checks what the options name.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

__all__ = ["UsageError", "Parser", "whole", "number", "whole_list", "device", "out_dir", "existing_file",
           "looks_like_path", "dataset_spec", "one_line"]


class UsageError(ValueError):
    """A user mistake, reported as one line (``prog``: the command that reports it, e.g. "swaa eval")."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse whose errors (unknown option, bad value, missing argument) are one UsageError line, without the
    usage block; ``swaa CMD --help`` still shows it."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)", self.prog)


def one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


def whole(lo: int = 0):
    """An int >= ``lo``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            _fail(f"{text!r} is not a whole number (give one >= {lo})")
        if v < lo:
            _fail(f"{v} is too small: give a whole number >= {lo}")
        return v
    parse.__name__ = f"whole number >= {lo}"
    return parse


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False):
    """A finite float in the interval given (open at an end where said)."""
    span = (("(" if lo_open else "[") + ("-inf" if lo is None else f"{lo:g}") + ", "
            + ("inf" if hi is None else f"{hi:g}") + (")" if hi_open or hi is None else "]"))

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            _fail(f"{text!r} is not a number (give one in {span})")
        if not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo))) or (
                hi is not None and (v > hi or (hi_open and v == hi))):
            _fail(f"{text} is out of range: give a number in {span}")
        return v
    parse.__name__ = f"number in {span}"
    return parse


def whole_list(lo: int = 0):
    """Comma-separated ints >= ``lo`` (at least one)."""
    one = whole(lo)

    def parse(text: str) -> list[int]:
        parts = [x.strip() for x in text.split(",")]
        if not text.strip() or not all(parts):
            _fail(f"{text!r}: give comma-separated whole numbers >= {lo}, e.g. 1024,2048")
        try:
            return [one(x) for x in parts]
        except argparse.ArgumentTypeError as e:
            _fail(f"{text!r}: {e}")
    parse.__name__ = "comma list"
    return parse


def device(text: str) -> str:
    """A torch device this machine has: cpu, cuda, cuda:N (or mps where there is one)."""
    import torch
    try:
        d = torch.device(text)
    except (RuntimeError, ValueError):
        _fail(f"{text!r} is not a device: use cpu, cuda or cuda:N")
    if d.type == "cpu":
        return text
    if d.type == "cuda":
        if not torch.cuda.is_available():
            _fail(f"{text!r}: this machine has no CUDA device (torch sees none); use --device cpu")
        if d.index is not None and d.index >= torch.cuda.device_count():
            _fail(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA devices (0..{torch.cuda.device_count() - 1})")
        return text
    if d.type == "mps" and torch.backends.mps.is_available():
        return text
    _fail(f"{text!r} is not a device of this machine: use cpu" + (" or cuda" if torch.cuda.is_available() else ""))


def out_dir(text: str) -> str:
    """An output folder: an existing folder, or one that can be made (no file on its path, a writable parent)."""
    path = Path(text).absolute()
    if path.exists() and not path.is_dir():
        _fail(f"{text!r} is a file, not a folder; give a folder (it is made if missing)")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        _fail(f"{text!r} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{text!r}: {parent} is not writable; give a folder you can write to")
    return text


def existing_file(text: str) -> str:
    path = Path(text)
    if not path.exists():
        _fail(f"{text!r} does not exist")
    if not path.is_file():
        _fail(f"{text!r} is a folder, not a file")
    return text


def looks_like_path(ref: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else (a file suffix, a leading . / ~, more parts) is a path."""
    return (ref.startswith((".", "/", "~")) or ref.count("/") > 1 or (os.sep != "/" and os.sep in ref)
            or Path(ref).suffix in (".parquet", ".jsonl", ".json"))


_SYNTHETIC = re.compile(r"synthetic:(\d+)(?::(\d+)(?::(\d+))?)?")


def dataset_spec(text: str) -> str:
    """A dataset file, a hub id (loaded by the datasets package, online), or synthetic:<length>[:<n per task>[:<seed>]]
    with length >= 64 and n >= 1."""
    if not text.startswith("synthetic:"):
        return text if not Path(text).exists() and not looks_like_path(text) else existing_file(text)
    m = _SYNTHETIC.fullmatch(text)
    if not m:
        _fail(f"{text!r}: write synthetic:<length>[:<n per task>[:<seed>]] with whole numbers, e.g. synthetic:1024:4")
    if int(m[1]) < 64:
        _fail(f"{text!r}: synthetic prompts need a length >= 64 tokens")
    if m[2] is not None and int(m[2]) < 1:
        _fail(f"{text!r}: give at least 1 row per task")
    return text
