"""SWAAConfig: the four SWAA knobs (original field names), validation, per-layer plan, `mark`, JSON round trip."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Union

__all__ = ["SWAAConfig", "LayerPlan", "config_of", "model_label", "load_settings", "pattern_to_layers",
           "layers_to_pattern"]

_FIELDS = ("sliding_window_size", "keep_first", "force_fa_decode", "non_sliding_layers")


def pattern_to_layers(pattern: str) -> list[int]:
    """Compact layer pattern -> `non_sliding_layers`: one letter a layer, `S` sliding, `F` full attention.

    ``pattern_to_layers("SF" * 3) == [1, 3, 5]`` (as nanochat writes window patterns like ``"SSSL"``;
    ``L`` is accepted as a synonym of ``F``).
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"layer pattern must be a non-empty string of 'S'/'F' letters, got {pattern!r}")
    bad = sorted({c for c in pattern.upper() if c not in "SFL"})
    if bad:
        raise ValueError(f"layer pattern {pattern!r} has letters {bad}; use 'S' (sliding) and 'F' (full attention) only")
    return [i for i, c in enumerate(pattern.upper()) if c in "FL"]


def layers_to_pattern(non_sliding_layers: Iterable[int], num_layers: int) -> str:
    """Inverse of :func:`pattern_to_layers` for a model with ``num_layers`` layers."""
    full = set(non_sliding_layers)
    return "".join("F" if i in full else "S" for i in range(num_layers))


@dataclass(frozen=True)
class LayerPlan:
    """What one layer does: `window` None means full attention for every query of that layer."""

    window: int | None
    keep_first: int
    fa_decode: bool


def _format_window(w: int) -> str:
    # The original wrote int(W // 1000) + "k" (2000 -> 2k, 2048 -> 2k). Keep that where it is exact
    # enough to be unambiguous (multiples of 1000 or 1024) and write the number itself otherwise,
    # so that small windows (64, 256) do not all collapse to "0k".
    if w >= 1000 and (w % 1000 == 0 or w % 1024 == 0):
        return f"{w // 1000}k"
    return str(w)


@dataclass(eq=True)
class SWAAConfig(dict):
    """Sliding Window Attention Adaptation settings, with the original code's field names and defaults.

    - ``sliding_window_size``: None = full attention, else W >= 1 keys visible to a query, itself included.
    - ``keep_first``: S >= 0 first tokens of each sequence that stay visible to every query (sinks).
    - ``force_fa_decode``: True = decode tokens use full attention; a list = only in those layers.
    - ``non_sliding_layers``: layers that always use full attention. A pattern string such as ``"SF" * 15``
      (``S`` sliding, ``F`` full) is accepted as sugar and turned into the list.

    Layer lists are kept as written: the original's ``mark`` depends on their order. Indices beyond a model's
    depth are legal here and ignored when the config meets a model (:meth:`validate_layers`), as the original
    code ignored them: the paper's settings lists name layers up to 47 for 32- and 36-layer models.

    It is also a ``dict`` of its four fields, so ``model.config.swaa_config = SWAAConfig(...)`` (the original
    code's way) survives ``save_pretrained``: transformers writes it as a plain JSON object.
    """

    sliding_window_size: Union[int, None] = None
    keep_first: int = 0
    force_fa_decode: Union[bool, list] = False
    non_sliding_layers: Union[list, str] = field(default_factory=list)

    def __post_init__(self) -> None:
        w = self.sliding_window_size
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(
                f"sliding_window_size={w!r} is invalid: use None for full attention or an int >= 1 "
                "(the number of keys a query sees, itself included)")
        s = self.keep_first
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"keep_first={s!r} is invalid: use an int >= 0 (number of sink tokens; 0 = none)")
        fa = self.force_fa_decode
        if isinstance(fa, (list, tuple)):
            object.__setattr__(self, "force_fa_decode", _check_layers("force_fa_decode", fa))
        elif not isinstance(fa, bool):
            raise ValueError(
                f"force_fa_decode={fa!r} is invalid: use True/False or a list of layer indices")
        nsl = self.non_sliding_layers
        if isinstance(nsl, str):
            nsl = pattern_to_layers(nsl)
        if not isinstance(nsl, (list, tuple)):
            raise ValueError(
                f"non_sliding_layers={nsl!r} is invalid: use a list of layer indices or a pattern like 'SF'*18")
        object.__setattr__(self, "non_sliding_layers", _check_layers("non_sliding_layers", nsl))
        dict.clear(self)
        dict.update(self, self.to_dict())

    def __setattr__(self, name: str, value: Any) -> None:
        ready = all(hasattr(self, f) for f in _FIELDS)
        old = getattr(self, name, None)
        object.__setattr__(self, name, value)
        if name in _FIELDS and ready:
            try:
                self.__post_init__()  # re-validate and keep the dict view in sync
            except Exception:
                object.__setattr__(self, name, old)
                raise

    # dict's own hash/eq would shadow the dataclass ones
    __hash__ = None  # type: ignore[assignment]

    # -- per layer -------------------------------------------------------------------------------
    def validate_layers(self, num_layers: int, model: str | None = None) -> None:
        """Meet a model of ``num_layers`` layers: indices beyond its depth are ignored (the per-layer plan never
        asks for them; the mark keeps them), with one warning per config and model that names them."""
        beyond = {name: [i for i in getattr(self, name) if i >= num_layers]
                  for name in ("non_sliding_layers", "force_fa_decode") if isinstance(getattr(self, name), list)}
        listed = "; ".join(f"{name} {bad}" for name, bad in beyond.items() if bad)
        key = (self.to_json(), num_layers, model)
        if not listed or key in _WARNED:
            return
        _WARNED.add(key)
        warnings.warn(f"swaa_config {self.mark}: {listed} are beyond the {num_layers} layers of "
                      f"{model or 'the model'} (indices 0..{num_layers - 1}) and are ignored, as the original code "
                      "ignored them", UserWarning, stacklevel=3)

    def layer(self, layer_idx: int) -> LayerPlan:
        """The plan of one layer: window (None = full), sinks, and whether its decode tokens use FA."""
        if self.sliding_window_size is None or layer_idx in self.non_sliding_layers:
            return LayerPlan(None, 0, False)
        fa = self.force_fa_decode
        fa_decode = (layer_idx in fa) if isinstance(fa, list) else bool(fa)
        return LayerPlan(self.sliding_window_size, self.keep_first, fa_decode)

    @property
    def is_full(self) -> bool:
        return self.sliding_window_size is None

    # -- names -----------------------------------------------------------------------------------
    @property
    def mark(self) -> str:
        """Short name in the original format, e.g. ``swa=2k_sink=100_falayer=12_from1_step4_fadec``, computed from
        the layer lists as written (out-of-range layers and order included), so that it equals the original's for
        every entry of the paper's settings lists (tests/unit/test_paper_settings.py).

        Two departures, both where the original's name was useless as a file name: full attention is ``"full"``
        (the original returned ``""``), and a window that is no multiple of 1000 or 1024 is written as its number
        (``swa=64``) where the original's ``W // 1000`` wrote ``0k`` for every window below 1000.
        """
        if self.sliding_window_size is None:
            return "full"
        mark = f"swa={_format_window(self.sliding_window_size)}_sink={self.keep_first}"
        layers = self.non_sliding_layers
        if len(layers) > 2:
            step = layers[1] - layers[0]
            if all(layers[i] - layers[i - 1] == step for i in range(2, len(layers))):
                mark += f"_falayer={len(layers)}_from{layers[0]}_step{step}"
            else:
                mark += f"_falayer=nonlazy{len(layers)}_from{layers[0]}"
        elif layers:
            mark += f"_falayer={len(layers)}_from{layers[0]}"
        if self.force_fa_decode:
            mark += "_fadec"
        return mark

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        fa = self.force_fa_decode
        return {
            "sliding_window_size": self.sliding_window_size,
            "keep_first": self.keep_first,
            "force_fa_decode": list(fa) if isinstance(fa, list) else fa,
            "non_sliding_layers": list(self.non_sliding_layers),
        }

    dict = to_dict  # the original code's name for it

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: "dict | SWAAConfig | None") -> "SWAAConfig":
        if isinstance(d, SWAAConfig):
            return d
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise TypeError(f"swaa_config must be a SWAAConfig or a dict, got {type(d).__name__}: {d!r}")
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown SWAAConfig fields {unknown}; the fields are {list(_FIELDS)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "SWAAConfig":
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return "SWAAConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def __reduce__(self):  # pickling/deepcopy go through the validated constructor
        return (self.__class__.from_dict, (self.to_dict(),))


def _check_layers(name: str, layers: Iterable) -> list[int]:
    out = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"{name} contains {i!r}: layer indices must be ints >= 0")
        out.append(i)
    if len(set(out)) != len(out):
        dup = sorted({i for i in out if out.count(i) > 1})
        raise ValueError(f"{name} lists layers {dup} more than once")
    return out


def load_settings(path_or_list: "str | os.PathLike | list") -> list[tuple[SWAAConfig, list[str]]]:
    """Read the original settings-list JSON: ``[{"swaa_config": {...}, "model_list": [...]}, ...]``.

    Returns ``[(SWAAConfig, [model, ...]), ...]``; an entry without ``model_list`` gets ``[]``. An empty list, an
    entry with other keys (a misspelt one would be ignored) and ``"swaa_config": null`` are refused: full attention
    is ``{"sliding_window_size": null}``, said explicitly.
    """
    data = path_or_list
    if not isinstance(data, list):
        from .jsonfile import read_json
        data = read_json(path_or_list)
    where = "the settings list" if isinstance(path_or_list, list) else str(path_or_list)
    if not isinstance(data, list):
        raise ValueError(f"{where}: a settings list is a JSON list of {{'swaa_config': ..., 'model_list': ...}}")
    if not data:
        raise ValueError(f"{where} is an empty list: give at least one {{'swaa_config': ...}} entry")
    out = []
    for n, entry in enumerate(data):
        if not isinstance(entry, dict) or "swaa_config" not in entry:
            raise ValueError(f"{where}: settings entry {n} ({entry!r}) has no 'swaa_config' key")
        unknown = sorted(set(entry) - {"swaa_config", "model_list"})
        if unknown:
            raise ValueError(f"{where}: settings entry {n} has unknown keys {unknown}; an entry has 'swaa_config' "
                             "and optionally 'model_list'")
        if entry["swaa_config"] is None:
            raise ValueError(f"{where}: settings entry {n} has \"swaa_config\": null; write "
                             "{\"sliding_window_size\": null} for full attention")
        try:
            cfg = SWAAConfig.from_dict(entry["swaa_config"])
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: settings entry {n}: {e}") from e
        models = entry.get("model_list", [])
        if isinstance(models, str):
            models = [models]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValueError(f"{where}: settings entry {n} has model_list {models!r}; give a list of model names")
        out.append((cfg, list(models)))
    return out


assert tuple(f.name for f in fields(SWAAConfig)) == _FIELDS


_WARNED: set = set()  # (config, layer count, model) already warned about out-of-range layers
_SEEN: dict = {}     # id(raw dict) -> (its copy, layer count, SWAAConfig, its items): attention calls ask per layer


def model_label(model_config) -> str:
    """How messages name a model: its path or hub id, else its model type."""
    return (getattr(model_config, "name_or_path", None) or getattr(model_config, "model_type", None)
            or type(model_config).__name__)


def config_of(model_config, *, source: str | None = None) -> SWAAConfig | None:
    """The SWAAConfig a model config carries as ``swaa_config`` (on it, or on its text config for multimodal
    wrappers), validated against its layer count; None when it carries none. ``source`` names where the config came
    from in the error for an invalid one (e.g. "hf_overrides"). Cheap on repeated calls (the model integration
    asks once per layer and step): a dict already converted and unchanged is not parsed again."""
    raw = getattr(model_config, "swaa_config", None)
    text = model_config
    if raw is None or getattr(model_config, "num_hidden_layers", None) is None:
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
        if raw is None:
            raw = getattr(text, "swaa_config", None)
    if raw is None:
        return None
    n = getattr(text, "num_hidden_layers", None)
    if isinstance(raw, dict):
        hit = _SEEN.get(id(raw))           # the same dict, unchanged, and the config given out not changed since
        if hit is not None and hit[1] == n and hit[0] == raw and dict.__eq__(hit[2], hit[3]):
            return hit[2]
    try:
        cfg = SWAAConfig.from_dict(raw)
    except (TypeError, ValueError) as e:
        if source is None:
            raise
        raise ValueError(f"invalid swaa_config {raw!r} in {source}: {e}") from None
    if n is not None:
        cfg.validate_layers(n, model_label(model_config))
    if isinstance(raw, dict):
        if len(_SEEN) > 64:
            _SEEN.clear()
        _SEEN[id(raw)] = (dict(raw), n, cfg, dict(cfg))
    return cfg
