"""Typed config sections: one definition of every config key's type, allowed values and meaning.

A section is a frozen, keyword-only dataclass deriving from `Section` whose fields are declared with
`key(default, doc, ge=..., choices=...)`. The same declaration
- checks a value when the section is built (`__post_init__`), naming the key, the value and what is allowed;
- builds the section from a config mapping (`from_dict`), rejecting unknown keys and naming the key path;
- writes the JSON schema that Snakemake validates the config with (`json_schema`), so the schema in
  workflow/schemas/ is generated from the sections, never written by hand (tests check it is current).

Checks that tie several keys together go in a section's `check()` method.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, ClassVar


def key(default: Any = MISSING, doc: str = "", *, ge=None, gt=None, le=None, lt=None, choices=None,
        pattern: str | None = None, nonempty: bool = False, unique: bool = False, internal: bool = False):
    """A section field: its default (none = required), what it is for, and the values it allows.

    Number bounds and `choices` apply to the value, or to each item of a list. `internal` fields are set by
    the code (e.g. the vocabulary size read from the tokenizer) and are not config keys."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "pattern": pattern,
            "nonempty": nonempty, "unique": unique, "internal": internal}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _is(value, tp) -> bool:
    """Does `value` have type `tp` (bool, int, float, str, dict, list[...], X | None, a Section)?"""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_is(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is Any:
        return True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_is(v, args[0]) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict) and all(_is(v, args[1]) for v in value.values()) if args else isinstance(value, dict)
    return isinstance(value, tp)


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             type(None): "null"}
    return names.get(origin or tp, "a mapping" if isinstance(tp, type) and issubclass(tp, Section) else str(tp))


def _bounds(meta: dict) -> str:
    out = [f"{op} {meta[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if meta[k] is not None]
    if meta["choices"] is not None:
        out.append(f"one of {list(meta['choices'])}")
    if meta["pattern"]:
        out.append(f"matching {meta['pattern']}")
    return ", ".join(out)


def _in_bounds(v, meta: dict) -> bool:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if ((meta["ge"] is not None and not v >= meta["ge"]) or (meta["gt"] is not None and not v > meta["gt"])
                or (meta["le"] is not None and not v <= meta["le"]) or (meta["lt"] is not None and not v < meta["lt"])):
            return False
    if meta["choices"] is not None and isinstance(v, (str, int, float)) and v not in meta["choices"]:
        return False
    return not (meta["pattern"] and isinstance(v, str) and not re.fullmatch(meta["pattern"], v))


@dataclass(frozen=True, kw_only=True)
class Section:
    """Base of every config section (subclasses are `@dataclass(frozen=True, kw_only=True)`)."""

    schema_extra: ClassVar[dict] = {}  # JSON-schema keywords that field declarations cannot say

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, meta, tp = getattr(self, f.name), f.metadata, hints[f.name]
            if not meta:
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            ok = (_is(value, tp) and all(_in_bounds(v, meta) for v in items)
                  and not (meta["nonempty"] and isinstance(value, (list, tuple, dict)) and not value)
                  and not (meta["unique"] and isinstance(value, (list, tuple)) and len(set(map(repr, value))) != len(value)))
            if not ok:
                allowed = _describe(tp) + (f" ({_bounds(meta)})" if _bounds(meta) else "")
                extra = ", non-empty" if meta["nonempty"] else ""
                raise ValueError(f"{f.name} = {value!r} is invalid: it must be {allowed}{extra}"
                                 + (", without repeats" if meta["unique"] else ""))
        self.check()

    def check(self) -> None:
        """Checks that involve several keys; raise ValueError naming them."""

    @classmethod
    def keys(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]

    @classmethod
    def from_dict(cls, raw: dict | None, path: str = ""):
        """Build the section from a config mapping; errors name the key path (`path.key`)."""
        where = f"{path}." if path else ""
        if isinstance(raw, cls):
            return raw
        if not isinstance(raw, dict):
            raise ValueError(f"{path or cls.__name__} = {raw!r} is invalid: it must be a mapping")
        known = {f.name for f in cls.keys()}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{where}{unknown[0]}: unknown key; allowed keys of {path or cls.__name__}: {sorted(known)}")
        hints = typing.get_type_hints(cls)
        missing = [f.name for f in cls.keys() if f.default is MISSING and f.default_factory is MISSING
                   and f.name not in raw]
        if missing:
            raise ValueError(f"{where}{missing[0]}: missing key (required: {missing})")
        args = {k: _build(hints[k], v, f"{where}{k}") for k, v in raw.items()}
        try:
            return cls(**args)
        except ValueError as e:
            raise ValueError(f"{where}{e}") from None

    def to_dict(self) -> dict:
        """The section as a config mapping (its config keys only, nested sections as mappings)."""
        def plain(v):
            if isinstance(v, Section):
                return v.to_dict()
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

        return {f.name: plain(getattr(self, f.name)) for f in self.keys()}


def _build(tp, value, path: str):
    """A config value as its declared type: mappings become sections, lists of mappings lists of sections."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        sections = [a for a in args if isinstance(a, type) and issubclass(a, Section)]
        return sections[0].from_dict(value, path) if sections and isinstance(value, dict) else value
    if isinstance(tp, type) and issubclass(tp, Section):
        return tp.from_dict(value, path)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        inner = args[0]
        if isinstance(inner, type) and issubclass(inner, Section):
            return [inner.from_dict(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _type_schema(tp, meta: dict) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_schema(a, meta) for a in args if a is not type(None)]
        nullable = type(None) in args
        if len(parts) == 1 and "type" in parts[0] and isinstance(parts[0]["type"], str) and "properties" not in parts[0]:
            out = dict(parts[0])
            out["type"] = [out["type"], "null"] if nullable else out["type"]
            return out
        return {"anyOf": parts + ([{"type": "null"}] if nullable else [])}
    if isinstance(tp, type) and issubclass(tp, Section):
        return json_schema(tp)
    if origin in (list, tuple):
        out = {"type": "array", "items": _type_schema(args[0], meta)}
        if meta.get("nonempty"):
            out["minItems"] = 1
        if meta.get("unique"):
            out["uniqueItems"] = True
        return out
    if origin is dict or tp is dict:
        out = {"type": "object"}
        if args:
            out["additionalProperties"] = _type_schema(args[1], {})
        if meta.get("nonempty"):
            out["minProperties"] = 1
        return out
    if tp is Any:
        return {}
    out = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]}
    for k, word in (("ge", "minimum"), ("gt", "exclusiveMinimum"), ("le", "maximum"), ("lt", "exclusiveMaximum")):
        if meta.get(k) is not None:
            out[word] = meta[k]
    if meta.get("choices") is not None:
        out["enum"] = list(meta["choices"])
    if meta.get("pattern"):
        out["pattern"] = f"^(?:{meta['pattern']})$"
    return out


def json_schema(cls: type[Section]) -> dict:
    """The JSON schema of a section: every key with its type, range and doc; unknown keys rejected."""
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in cls.keys():
        prop = _type_schema(hints[f.name], f.metadata)
        if f.metadata.get("doc"):
            prop = {"description": f.metadata["doc"], **{k: v for k, v in prop.items() if k != "description"}}
        props[f.name] = prop
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(f.name)
    out = {"type": "object", "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        out = {"description": " ".join(cls.__doc__.split()), **out}
    if required:
        out["required"] = required
    return {**out, "properties": props, **cls.schema_extra}
