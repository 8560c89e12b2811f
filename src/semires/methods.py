"""The methods a ``semires run`` compares: one table of name, label and settings.

A method is the supervised burn-in or a teacher-student run with a refinement strategy (and
maybe other ``semi`` settings). Whether it needs a proposal store follows from its strategy
(:data:`semires.train.strategies.STRATEGIES`). The pipeline, the report, the web app and the
bench scripts all read this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from semires.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """One row of the table."""

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


SUPERVISED = Method("supervised", "supervised (burn-in)", None)

#: every method by name; ``semires run`` trains the ones its ``methods`` key lists
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        SUPERVISED,
        Method("teacher_student", "teacher-student (no SAM)", {"strategy": "none"}),
        Method("iom", "SemiRES-IOM", {"strategy": "iom"}),
        Method("cpi", "SemiRES-CPI", {"strategy": "cpi"}),
        Method("cpi_u", "SemiRES-CPI-U", {"strategy": "cpi", "cpi_u": True, "cpi_o": False}),
        Method("cpi_o", "SemiRES-CPI-O", {"strategy": "cpi", "cpi_u": False, "cpi_o": True}),
        Method("confidence", "confidence-filtered", {"strategy": "confidence"}),
        Method("soft", "soft-IoU matching", {"strategy": "soft"}, ours=True),
        Method("consensus", "consensus + CPI", {"strategy": "cpi"}, {"consensus": True}, ours=True),
        Method(
            "consensus_soft",
            "consensus + soft-IoU",
            {"strategy": "soft"},
            {"consensus": True},
            ours=True,
        ),
    )
}

#: the names ``semires run`` accepts in ``methods`` (every teacher-student method)
TEACHER_STUDENT = tuple(name for name, m in METHODS.items() if m.teacher_student)


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


def method(name: str) -> Method:
    """The method named ``name``: a table entry, a round's stage (``cpi-round2``), or a variant
    with other refinement constants, ``base[key=value,...]`` (``cpi[t1=0.5]``,
    ``iom[tau=0.3]``: the paper's threshold ablations from one burn-in). ConfigError listing the
    valid names otherwise."""
    base, _ = split_stage(name)
    core, bracket, rest = base.partition("[")
    if core not in METHODS or (bracket and not rest.endswith("]")):
        raise ConfigError(
            f"unknown method {name!r}; valid: {', '.join(METHODS)} (or base[key=value])"
        )
    found = METHODS[core]
    if not bracket:
        return found
    if found.refine is None:
        raise ConfigError(f"method {name!r}: the supervised burn-in has no refinement to vary")
    changes = _parse_variant(name, rest[:-1])
    text = ", ".join(f"{k}={v}" for k, v in changes.items())
    return Method(
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
