"""Typed configuration: nested dataclasses loaded from YAML with strict validation.

``load_dataclass(Cls, mapping)`` builds ``Cls`` from a plain mapping and rejects, with one line
naming the dotted key, anything that does not fit: an unknown key, a value of the wrong type, a
value outside a ``Literal``, a number outside its field's domain. ``apply_overrides`` applies
``key.sub=value`` strings from the command line (values parsed as YAML scalars / lists) before
validation.

Numbers: no config holds NaN or an infinity anywhere (a field, a list item, a value of a free
mapping such as ``model.overrides``) unless its field says so (``numeric(..., finite=False)``);
a field declared with :func:`numeric` also has its range checked (``ge`` / ``gt`` / ``le`` /
``lt``), item by item for a list or tuple, and the error names the key and the domain::

    weight_decay: float = numeric(1e-2, ge=0)
    # config key 'train.weight_decay': expected a finite number >= 0, got nan
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Domain:
    """The numbers a config field accepts: bounds (``ge`` / ``gt`` below, ``le`` / ``lt``
    above; None = unbounded) and whether NaN / infinities are allowed (``finite=False``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def bounds(self) -> tuple[str, str]:
        """How the bounds read after "a finite number" and after "expected": ``(">= 0",
        ">= 0")`` or ``("in [0, 1]", "a value in [0, 1]")`` (``("", "")`` without bounds)."""
        low = (_num(self.ge), "[", ">=") if self.ge is not None else None
        low = (_num(self.gt), "(", ">") if self.gt is not None else low
        high = (_num(self.le), "]", "<=") if self.le is not None else None
        high = (_num(self.lt), ")", "<") if self.lt is not None else high
        if low and high:
            text = f"in {low[1]}{low[0]}, {high[0]}{high[1]}"
            return text, f"a value {text}"
        one = f"{low[2]} {low[0]}" if low else f"{high[2]} {high[0]}" if high else ""
        return one, one

    def problem(self, value: float) -> str | None:
        """What ``value`` should have been (``"a finite number >= 0"``), or None when fine."""
        after, alone = self.bounds()
        if isinstance(value, int) and not -INT_LIMIT <= value < INT_LIMIT:
            return f"an integer {after} (and below 2**63)".replace("  ", " ")
        finite = isinstance(value, int) or math.isfinite(value)
        if not finite and self.finite:
            return f"a finite number {after}".strip()
        if (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        ):
            return alone
        return None


#: the domain of a number without declared bounds: any finite value
FINITE = Domain()
#: integers are 64-bit wherever they go (torch, numpy): beyond, a config value is refused
INT_LIMIT = 2**63


def _num(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def numeric(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field whose numbers (the value, or each item of a list / tuple) must lie in
    a domain; :func:`load_dataclass` checks it and names the key (see the module doc)."""
    domain = Domain(ge=ge, gt=gt, le=le, lt=lt, finite=finite)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"domain": domain})
    return dataclasses.field(default=default, metadata={"domain": domain})


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line messages."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        text = f"<an integer of about {value.bit_length() * 0.30103:.0f} digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_numbers(
    value: Any, key: str, domain: Domain | None = None, optional: bool = False
) -> None:
    """Refuse, naming ``key``, a number in ``value`` (itself, or an item of its lists, tuples
    and mappings, recursively) outside ``domain`` (default: any finite number); booleans,
    strings, None and dataclass instances (checked when they were built) are skipped."""
    if value is None or isinstance(value, bool | str) or dataclasses.is_dataclass(value):
        return
    if isinstance(value, int | float):
        problem = (domain or FINITE).problem(value)
        if problem is not None:
            expected = f"null or {problem}" if optional else problem
            raise ConfigError(f"config key {key!r}: expected {expected}, got {shown(value)}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_numbers(item, f"{key}[{i}]", domain)
    elif isinstance(value, dict):
        for name, item in value.items():
            check_numbers(item, f"{key}.{name}", domain)


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
                f"config key {key!r}: expected one of {_type_name(tp)}, got {shown(value)}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {shown(value)}")
        return load_dataclass(tp, value, prefix=key)
    if origin in (list, tuple):
        return _convert_sequence(value, tp, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {shown(value)}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    raise ConfigError(f"config key {key!r}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    others = [a for a in args if a is not type(None)]
    if len(others) == 1:  # ``X | None``: X's own error says more (e.g. a nested key)
        return _convert(value, others[0], key)
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {shown(value)}")


def _convert_sequence(value: Any, tp: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, list | tuple):
        raise ConfigError(f"config key {key!r}: expected a list, got {shown(value)}")
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
        raise ConfigError(f"config key {key!r}: expected a number, got {shown(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range
        raise ConfigError(
            f"config key {key!r}: expected a finite number, got {shown(value)}"
        ) from None


def _exactly(tp: type, expected: str) -> Any:
    """A checker that accepts values of type ``tp`` only (bools are not integers here)."""

    def check(value: Any, key: str) -> Any:
        if isinstance(value, bool) != (tp is bool) or not isinstance(value, tp):
            raise ConfigError(f"config key {key!r}: expected {expected}, got {shown(value)}")
        return value

    return check


def _to_path(value: Any, key: str) -> Path:
    if not isinstance(value, str | Path):
        raise ConfigError(f"config key {key!r}: expected a path, got {shown(value)}")
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
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key)
        optional = type(None) in get_args(hints[name])
        check_numbers(kwargs[name], key, fields[name].metadata.get("domain"), optional)
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
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int of > 4300 digits
        first = " ".join(str(exc).split())[:120]
        raise ConfigError(f"override {shown(text)}: cannot parse the value ({first})") from None
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


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` applied, nested mappings merged key by key."""
    import copy

    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int of > 4300 digits
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"config file {path}: invalid YAML ({first})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data
