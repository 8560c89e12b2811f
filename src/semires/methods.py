"""The methods a ``semires run`` compares: name, label and settings of each.

A method is the supervised burn-in or a teacher-student run with a refinement strategy (and
maybe other ``semi`` settings). Every registered refinement strategy is a method of its own name
(``iom``, ``cpi``, a user's ``mine``), labelled by its class (:data:`semires.train.strategies.
STRATEGIES`); the table below adds the ones with other settings (the paper's ablations, our
consensus) and the plain teacher-student run. Whether a method needs a proposal store follows
from its strategy. The pipeline, the report, the web app and the bench scripts read this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from semires.errors import ConfigError


@dataclass(frozen=True)
class RunMethod:
    """One method of a run's comparison."""

    name: str
    label: str
    #: overrides of the run's ``semi.refine`` section (None: the supervised burn-in)
    refine: dict[str, Any] | None
    #: overrides of other ``semi`` keys
    semi: dict[str, Any] = field(default_factory=dict)
    #: beyond the paper (our strategies)
    ours: bool = False

    @property
    def teacher_student(self) -> bool:
        return self.refine is not None

    @property
    def needs_proposals(self) -> bool:
        from semires.train.strategies import needs_proposals

        return self.refine is not None and needs_proposals(self.refine["strategy"])


SUPERVISED = RunMethod("supervised", "supervised (burn-in)", None)


def _variant(name: str, label: str, strategy: str, ours: bool = False, **semi: Any) -> RunMethod:
    refine = {"strategy": strategy}
    return RunMethod(name, label, refine, semi, ours)


#: the object-level settings of ``objects`` (over CPI; docs/refinement.md)
_OBJECTS: dict[str, Any] = {
    "consensus": True,
    "flip_view": True,
    "select": {"signal": "confidence"},
}

#: methods beyond "one registered strategy under its own name"
_TABLE: dict[str, RunMethod] = {
    m.name: m
    for m in (
        SUPERVISED,
        RunMethod("teacher_student", "teacher-student (no SAM)", {"strategy": "none"}),
        RunMethod("cpi_u", "SemiRES-CPI-U", {"strategy": "cpi", "cpi_u": True, "cpi_o": False}),
        RunMethod("cpi_o", "SemiRES-CPI-O", {"strategy": "cpi", "cpi_u": False, "cpi_o": True}),
        _variant("consensus", "consensus + CPI", "cpi", ours=True, consensus=True),
        _variant("consensus_soft", "consensus + soft-IoU", "soft", ours=True, consensus=True),
        # pseudo-labels on the right object (docs/refinement.md): each mechanism over CPI alone,
        # then together
        _variant("exclusive", "CPI + exclusive assignment", "cpi", ours=True, assign="exclusive"),
        _variant("flipview", "CPI + flipped teacher view", "cpi", ours=True, flip_view=True),
        _variant(
            "select", "CPI + object selection", "cpi", ours=True, select={"signal": "confidence"}
        ),
        _variant("objects", "CPI + consensus, flip view, selection", "cpi", ours=True, **_OBJECTS),
        _variant(
            "objects_mirror",
            "objects + mirrored student view",
            "cpi",
            ours=True,
            **_OBJECTS,
            flip_student=0.5,
        ),
    )
}


def methods() -> dict[str, RunMethod]:
    """Every method by name: the supervised burn-in, the plain teacher-student run, one per
    registered strategy (other than ``none``), and the table's variants."""
    from semires.train.strategies import STRATEGIES

    out = {"supervised": SUPERVISED, "teacher_student": _TABLE["teacher_student"]}
    for name in STRATEGIES:
        if name != "none":
            cls = STRATEGIES.get(name)
            out[name] = RunMethod(name, cls.label, {"strategy": name}, ours=cls.ours)
        # the table's variants of a strategy follow it (cpi_u, cpi_o after cpi)
        out.update({k: m for k, m in _TABLE.items() if _is_variant_of(m, name)})
    out.update({k: m for k, m in _TABLE.items() if k not in out})
    return out


def _is_variant_of(m: RunMethod, strategy: str) -> bool:
    return m.refine is not None and m.refine["strategy"] == strategy and not m.semi and not m.ours


def teacher_student_names() -> tuple[str, ...]:
    """The names ``semires run`` accepts in ``methods`` (every teacher-student method)."""
    return tuple(name for name, m in methods().items() if m.teacher_student)


#: the stage of a method's self-training round r >= 2 is ``<method>-round<r>``
ROUND = "-round"


def stage_name(name: str, round_: int) -> str:
    """The stage (and folder) of round ``round_`` of method ``name``; round 1 is the method."""
    return name if round_ <= 1 else f"{name}{ROUND}{round_}"


def split_stage(stage: str) -> tuple[str, int]:
    """``cpi-round2`` -> (``cpi``, 2); ``cpi`` -> (``cpi``, 1)."""
    base, sep, rnd = stage.rpartition(ROUND)
    if sep and rnd.isdigit() and base:
        return base, int(rnd)
    return stage, 1


def method(name: str) -> RunMethod:
    """The method named ``name``: a table entry, a round's stage (``cpi-round2``), or a variant
    with other refinement constants, ``base[key=value,...]`` (``cpi[t1=0.5]``,
    ``iom[tau=0.3]``: the paper's threshold ablations from one burn-in). ConfigError listing the
    valid names otherwise."""
    base, _ = split_stage(name)
    core, bracket, rest = base.partition("[")
    table = methods()
    if core not in table or (bracket and not rest.endswith("]")):
        raise ConfigError(
            f"unknown method {name!r}; valid: {', '.join(table)} (or base[key=value])"
        )
    found = table[core]
    if not bracket:
        return found
    if found.refine is None:
        raise ConfigError(f"method {name!r}: the supervised burn-in has no refinement to vary")
    changes = _parse_variant(name, rest[:-1])
    text = ", ".join(f"{k}={v}" for k, v in changes.items())
    return RunMethod(
        base, f"{found.label} ({text})", {**found.refine, **changes}, found.semi, found.ours
    )


def _parse_variant(name: str, text: str) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"method {name!r}: expected base[key=value,...], got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    if not out:
        raise ConfigError(f"method {name!r}: no refinement setting between the brackets")
    return out


def label(name: str) -> str:
    """The method's label in tables and figures (a round: ``SemiRES-CPI, round 2``; the name
    itself for an unknown one)."""
    base, rnd = split_stage(name)
    try:
        text = method(base).label
    except ConfigError:
        text = base
    return text if rnd == 1 else f"{text}, round {rnd}"


def needs_proposals(names: list[str]) -> bool:
    """Whether any of the named methods needs a proposal store."""
    return any(method(n).needs_proposals for n in names)
