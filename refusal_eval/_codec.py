"""One JSON codec for every artifact: driven by the dataclasses' type hints, not hand-written.

``encode(obj)`` turns dataclasses into dicts (a field whose metadata says ``rows`` writes its
dataclass elements as positional lists, the compact form plans use for candidates; a field with
``omit_none`` is left out when None), tuples into lists and mapping keys into strings.

``decode(hint, data)`` is its inverse for any hint built from dataclasses, ``tuple[X, ...]`` /
fixed tuples, ``list``, ``dict[K, V]`` (string keys converted back to ``K``), ``Optional`` /
unions, ``Literal``, ``Any`` and the scalars. It is strict: a bool is not an int, a float with a
fraction is not an int, a missing field without a default and an unknown field are errors. Every
error names where in the document it happened (``stage2.prompts[3].p_clean``), so a malformed
plan says which field to fix. ``strings=True`` also reads the command-line forms of scalars
(``"true"``, ``"none"``, ``"1,2,3"`` for a tuple): what ``--set key=value`` gives.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from .errors import RefusalEvalError

Json = Any


class DecodeError(RefusalEvalError):
    """``where``: the path of the offending value (``stage1.candidates[0]``)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}", "fix that field, or write the artifact again")
        self.where = where
        self.problem = problem


# --- encoding ---------------------------------------------------------------------------------
def encode(obj: Any) -> Json:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Json] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = _rows(value) if f.metadata.get("rows") else encode(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): encode(v) for k, v in obj.items()}
    return obj


def _rows(values: Any) -> Json:
    """Dataclass elements as positional lists (``[layer, latent, cosine]``)."""
    return [[encode(getattr(v, f.name)) for f in dataclasses.fields(v)] for v in values]


# --- decoding ---------------------------------------------------------------------------------
@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def decode(hint: Any, data: Json, where: str = "value", *, strings: bool = False) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return data
    if hint is type(None):
        if data is None or (strings and isinstance(data, str) and data.lower() in ("", "none", "null")):
            return None
        raise DecodeError(where, f"expected null, got {data!r}")
    if origin in (Union, types.UnionType):
        if type(None) in args and (
            data is None or (strings and isinstance(data, str) and data.lower() in ("", "none", "null"))
        ):
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return decode(arm, data, where, strings=strings)
            except DecodeError as exc:
                errors.append(exc.problem)
        raise DecodeError(where, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if data in args:
            return data
        raise DecodeError(where, f"expected one of {' | '.join(map(repr, args))}, got {data!r}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, data, where, strings)
    if origin is tuple or hint is tuple:
        items = _sequence(data, where, strings)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v, f"{where}[{i}]", strings=strings) for i, v in enumerate(items))
        if args and len(items) != len(args):
            raise DecodeError(where, f"expected {len(args)} items, got {len(items)}")
        return tuple(
            decode(a, v, f"{where}[{i}]", strings=strings)
            for i, (a, v) in enumerate(zip(args, items, strict=True))
        )
    if origin is list or hint is list:
        inner = args[0] if args else Any
        return [
            decode(inner, v, f"{where}[{i}]", strings=strings)
            for i, v in enumerate(_sequence(data, where, strings))
        ]
    if origin is dict or hint is dict:
        if not isinstance(data, Mapping):
            raise DecodeError(where, f"expected an object, got {type(data).__name__}")
        key, value = args if args else (Any, Any)
        return {
            decode(key, k, f"{where} key {k!r}", strings=True): decode(
                value, v, f"{where}.{k}", strings=strings
            )
            for k, v in data.items()
        }
    if hint in (int, float, str, bool):
        return _scalar(hint, data, where, strings)
    raise DecodeError(where, f"cannot decode into {_name(hint)}")  # a hint this codec was not built for


def _sequence(data: Json, where: str, strings: bool) -> list[Any]:
    if strings and isinstance(data, str):
        return [v.strip() for v in data.split(",") if v.strip()]
    if not isinstance(data, (list, tuple)):
        raise DecodeError(where, f"expected a list, got {type(data).__name__}")
    return list(data)


def _scalar(hint: type, data: Json, where: str, strings: bool) -> Any:
    bad = DecodeError(where, f"expected {hint.__name__}, got {data!r}")
    if strings and isinstance(data, str) and hint is not str:
        text = data.strip().lower()
        if hint is bool:
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise bad
            return text in ("true", "1", "yes")
        try:
            return hint(float(text)) if hint is float else int(text)
        except ValueError:
            raise bad from None
    if hint is bool:
        if isinstance(data, bool):
            return data
        raise bad
    if isinstance(data, bool):
        raise bad
    if hint is int:
        if isinstance(data, int) or (isinstance(data, float) and data.is_integer()):
            return int(data)
        raise bad
    if hint is float:
        if isinstance(data, (int, float)):
            return float(data)
        raise bad
    if isinstance(data, str):
        return data
    raise bad


def _dataclass(cls: type, data: Json, where: str, strings: bool) -> Any:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    types_ = hints(cls)
    if isinstance(data, (list, tuple)):  # the positional ("rows") form
        if len(data) != len(fields):
            raise DecodeError(where, f"expected {len(fields)} items for {cls.__name__}, got {len(data)}")
        data = {f.name: v for f, v in zip(fields, data, strict=True)}
    if not isinstance(data, Mapping):
        raise DecodeError(where, f"expected an object for {cls.__name__}, got {type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields})
    if unknown:
        raise DecodeError(where, f"unknown field(s) {unknown} for {cls.__name__}")
    kwargs = {}
    for f in fields:
        if f.name in data:
            kwargs[f.name] = decode(types_[f.name], data[f.name], f"{where}.{f.name}", strings=strings)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DecodeError(where, f"missing field {f.name!r} of {cls.__name__}")
    return cls(**kwargs)


def _round(obj: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits (non-finite -> null), so that a value written and
    read back gives the same bytes again."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {str(k): _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v, digits) for v in obj]
    return obj


def canonical_json(obj: Any) -> bytes:
    """The bytes every artifact and cache entry is written as (and hashed by): sorted keys, rounded
    floats, one line per item."""
    return (json.dumps(_round(obj), sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()
