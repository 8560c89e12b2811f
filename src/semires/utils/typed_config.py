"""Typed configuration: nested dataclasses loaded from YAML with strict validation.

``load_dataclass(Cls, mapping)`` builds ``Cls`` from a plain mapping and rejects, with one line
naming the dotted key, anything that does not fit: an unknown key, a value of the wrong type, a
value outside a ``Literal``. ``apply_overrides`` applies ``key.sub=value`` strings from the
command line (values parsed as YAML scalars / lists) before validation.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from semires.errors import ConfigError

T = TypeVar("T")


class FieldError(ConfigError):
    """A bad value found by a dataclass's own checks (``validate`` / ``__post_init__``), keyed
    relative to that dataclass (``"lr"``, ``"overrides.fusion_heads"``). :func:`load_dataclass`
    puts the path of the section in front, so the message names the key as the user wrote it
    (``burn_in.lr``, ``semi.refine.t1``, ``model.overrides.fusion_heads``); ``message`` holds
    ``{key}`` where the key goes."""

    def __init__(self, key: str, message: str = "config key '{key}': {detail}", **parts: Any):
        self.key, self.template, self.parts = key, message, parts
        text = message.replace("{key}", key)
        for name, value in parts.items():
            text = text.replace("{" + name + "}", str(value))
        super().__init__(text)

    def under(self, prefix: str) -> FieldError:
        """The same error with the key inside section ``prefix``."""
        key = f"{prefix}.{self.key}" if prefix else self.key
        return FieldError(key, self.template, **self.parts)


def invalid(key: str, detail: str) -> FieldError:
    """``config key '<path>.<key>': <detail>`` (see :class:`FieldError`)."""
    return FieldError(key, detail=detail)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (converted where lossless)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(
                f"config key {key!r}: expected one of {_type_name(tp)}, got {value!r}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return load_dataclass(tp, value, prefix=key)
    if origin in (list, tuple):
        return _convert_sequence(value, tp, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    raise ConfigError(f"config key {key!r}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}")


def _convert_sequence(value: Any, tp: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"config key {key!r}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    item = args[0] if args else Any
    out = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        # YAML reads "5e-5" (no dot) as a string: accept numeric strings for floats.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
    return float(value)


def _exactly(tp: type, expected: str) -> Any:
    """A checker that accepts values of type ``tp`` only (bools are not integers here)."""

    def check(value: Any, key: str) -> Any:
        if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
            raise ConfigError(f"config key {key!r}: expected {expected}, got {value!r}")
        return value

    return check


def _to_path(value: Any, key: str) -> Path:
    if not isinstance(value, str | Path):
        raise ConfigError(f"config key {key!r}: expected a path, got {value!r}")
    return Path(value)


#: scalar annotation -> its checker
_SCALARS = {
    float: _to_float,
    int: _exactly(int, "an integer"),
    bool: _exactly(bool, "true or false"),
    str: _exactly(str, "a string"),
    Path: _to_path,
}


def load_dataclass(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {prefix or 'root'}: expected a mapping, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"unknown config key {key!r}; valid keys{' of ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{prefix}.{name}" if prefix else name)
    try:
        obj = cls(**kwargs)
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()
    except FieldError as err:  # the class's own checks know only their own keys
        raise err.under(prefix) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-friendly Python (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` -> (["train", "lr"], 1e-4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: cannot parse the value ({exc})") from exc
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides to a nested mapping (a new mapping is returned)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {k!r} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"config file {path}: invalid YAML ({first})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data
