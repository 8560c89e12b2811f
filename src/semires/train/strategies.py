"""Refinement strategies: what a teacher-student run does with the teacher's pseudo-labels.

A strategy turns the teacher's pseudo-label into training labels (:meth:`Strategy.labels`) and
says how the student learns from them (:meth:`Strategy.loss`); both live in the strategy's own
class, next to each other, and the class says which counters it keeps (summed per epoch into
``history.json`` as ``share_<counter>``). The tensor maths (IOM, CPI, PWA, ...) is in
:mod:`semires.train.refine`; the pixel losses are :class:`semires.train.losses.PixelLosses`.

=============  ==========================================================  ==================
strategy       labels                                                      loss
=============  ==========================================================  ==================
``none``       the teacher's pseudo-label P (plain teacher-student)        CE
``iom``        IOM: the best-IoU candidate if IoU > tau, else P            matched: CE;
``cpi``        CPI: the union of candidates with r1 > t1 or r2 > t2        unmatched: PWA
``confidence``  P, pixels with max(p, 1 - p) < ``confidence`` ignored      CE on kept pixels
``soft``       soft IoU against p: the best candidate if > ``soft_tau``    (or CE without
               (ours, :func:`~semires.train.refine.soft_iom`)              ``pwa``); the two
                                                                           parts averaged
=============  ==========================================================  ==================

Every strategy is one class and one registration in :data:`STRATEGIES`; the package's own and a
user's alike (``semi.refine.strategy: <name>`` in a config; its own settings under
``semi.refine.options``, checked against the class's ``Options`` dataclass)::

    @register_strategy("mine")
    class Mine(Strategy):
        counters = ("kept",)
        def labels(self, P, p, M, valid): ...
        def loss(self, logits, result, losses): ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from semires.errors import ConfigError
from semires.train.losses import PixelLosses
from semires.train.refine import (
    PWA_OFFSET,
    PWA_SIGMA2,
    T1,
    T2,
    TAU,
    RefineResult,
    candidate_overlaps,
    check_inputs,
    confidence_filter,
    cpi_rules,
    cpi_union,
    iom_from_overlaps,
    pwa_weights,
    soft_iom,
)
from semires.utils.registry import Registry
from semires.utils.typed_config import FieldError, load_dataclass


class Strategy:
    """A refinement strategy (see the module docstring). Subclasses implement :meth:`labels`
    and :meth:`loss` and are registered with :func:`register_strategy`.

    ``self.cfg`` is the run's :class:`RefineConfig`; ``self.options`` its ``options`` read into
    the class's ``Options`` dataclass (None when the class has none).
    """

    #: the name it is registered under (set by :func:`register_strategy`)
    name: ClassVar[str] = ""
    #: its label in tables and figures (default: the name)
    label: ClassVar[str] = ""
    #: whether it needs candidate masks (a proposal store)
    needs_proposals: ClassVar[bool] = False
    #: the counters its :attr:`RefineResult.counts` holds (per-epoch shares in history.json)
    counters: ClassVar[tuple[str, ...]] = ()
    #: a dataclass of its own settings (``semi.refine.options``), or None
    Options: ClassVar[type | None] = None
    #: beyond the paper (marked as ours in tables and benches)
    ours: ClassVar[bool] = False

    def __init__(self, cfg: RefineConfig) -> None:
        self.cfg = cfg
        self.options = read_options(type(self), cfg.options)

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        """Training labels and per-pixel weights for the batch (P, p [B, H, W]; M [B, K, H, W]
        candidates with ``valid`` [B, K], see :mod:`semires.train.refine`)."""
        raise NotImplementedError

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        """The unsupervised loss of the student's logits [B, 2, H, W] on the strong view."""
        raise NotImplementedError


#: strategy name -> class, in the order of registration
STRATEGIES: Registry[type[Strategy]] = Registry("refinement strategy")


def register_strategy(name: str, *, label: str | None = None) -> Callable[[type], type]:
    """Class decorator: register a :class:`Strategy` subclass as ``name``."""

    def add(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise ConfigError(f"refinement strategy {name!r}: {cls!r} is not a Strategy class")
        cls.name = name
        cls.label = label or cls.__dict__.get("label") or name
        STRATEGIES.add(name, cls)
        return cls

    return add


def read_options(cls: type[Strategy], options: dict[str, Any]) -> Any:
    """``options`` read into ``cls.Options`` (None without one; then ``options`` must be
    empty); a bad key or value is a :class:`FieldError` keyed ``options.<key>``."""
    if cls.Options is None:
        if options:
            raise FieldError(
                "options",
                "{key}: strategy {name} has no options, got {value}",
                name=repr(cls.name),
                value=repr(options),
            )
        return None
    try:  # the placeholder becomes the key's whole path where the error is reported
        return load_dataclass(cls.Options, dict(options), prefix="{key}")
    except ConfigError as err:
        raise FieldError("options", str(err)) from None


def strategy_class(name: str) -> type[Strategy]:
    """The class registered as ``name`` (ConfigError listing the registered ones)."""
    return STRATEGIES.get(name)


def counter_names() -> tuple[str, ...]:
    """Every registered strategy's counters, each once, in registration order (the columns
    of the refinement statistics, the same for every run)."""
    out: dict[str, None] = {}
    for _, cls in STRATEGIES.items():
        out.update(dict.fromkeys(cls.counters))
    return tuple(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class RefineConfig:
    """How pseudo-labels are refined (the ``semi.refine`` section of a training config).

    ``strategy``: a registered name (:data:`STRATEGIES`): ``none`` (plain teacher-student),
    ``iom``, ``cpi``, ``confidence`` (P with pixels below ``confidence`` ignored) or ``soft``
    (soft-IoU matching against the teacher's probability, threshold ``soft_tau``; ours). ``pwa``
    weights the unmatched samples of ``iom`` / ``cpi`` / ``soft``. Defaults are the paper's
    (:mod:`semires.train.refine`, docs/method.md section 4). ``options``: the settings of a
    strategy that brings its own (its ``Options`` dataclass).
    """

    strategy: str = "cpi"
    tau: float = TAU
    t1: float = T1
    t2: float = T2
    cpi_u: bool = True
    cpi_o: bool = True
    pwa: bool = True
    pwa_sigma2: float = PWA_SIGMA2
    pwa_offset: float = PWA_OFFSET
    confidence: float = 0.9
    #: soft_iom's threshold; 0 takes the best candidate whenever the teacher puts any
    #: probability in one (measured on the demo's unlabeled images: 0 > 0.1 > 0.2 > 0.3)
    soft_tau: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """:class:`FieldError` (keyed within the section) for a bad value."""
        if self.strategy not in STRATEGIES:
            names = " | ".join(repr(n) for n in STRATEGIES)
            raise FieldError(
                "strategy",
                "config key '{key}': expected one of " + names + ", got {value}",
                value=repr(self.strategy),
            )
        for key in ("tau", "t1", "t2", "confidence", "soft_tau"):
            value = getattr(self, key)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise FieldError(
                    key, "{key} = {value}: expected a number in [0, 1]", value=repr(value)
                )
        for key in ("cpi_u", "cpi_o", "pwa"):
            if not isinstance(getattr(self, key), bool):
                raise FieldError(
                    key, "{key} = {value}: expected true or false", value=repr(getattr(self, key))
                )
        if self.strategy == "cpi" and not (self.cpi_u or self.cpi_o):
            raise FieldError("cpi_u", "{key} and cpi_o are both false: CPI needs one rule")
        self._check_pwa()
        read_options(STRATEGIES.get(self.strategy), self.options)

    def _check_pwa(self) -> None:
        sigma2, offset = self.pwa_sigma2, self.pwa_offset
        if not _is_number(sigma2) or not 0.0 < sigma2 < math.inf:
            raise FieldError(
                "pwa_sigma2", "{key} = {value}: expected a positive number", value=repr(sigma2)
            )
        if not _is_number(offset) or not math.isfinite(offset):
            raise FieldError(
                "pwa_offset", "{key} = {value}: expected a finite number", value=repr(offset)
            )
        peak = 1.0 / math.sqrt(2.0 * math.pi * sigma2)
        if offset < peak:
            raise FieldError(
                "pwa_offset",
                "{key} = {value}: PWA weights would be negative near p = 0.5 "
                f"(need pwa_offset >= {peak:.4f} for pwa_sigma2 = {sigma2!r})",
                value=repr(offset),
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict (for saving next to a run)."""
        return asdict(self)


def make_strategy(cfg: RefineConfig) -> Strategy:
    """The strategy ``cfg.strategy`` names, configured by ``cfg``."""
    return STRATEGIES.get(cfg.strategy)(cfg)


def needs_proposals(strategy: str) -> bool:
    """Whether the named strategy needs a proposal store."""
    return STRATEGIES.get(strategy).needs_proposals


def strategy_labels(
    P: Tensor, p: Tensor, M: Tensor, valid: Tensor, cfg: RefineConfig
) -> RefineResult:
    """The labels of ``cfg.strategy`` for one batch (checks the shapes first)."""
    check_inputs(P, M, valid)
    if p.shape != P.shape:
        raise ValueError(f"p has shape {tuple(p.shape)}, P has {tuple(P.shape)}")
    return make_strategy(cfg).labels(P, p, M, valid)


# ---------------------------------------------------------------------------- the package's own
def _unmatched(P: Tensor) -> Tensor:
    return torch.zeros(P.shape[0], dtype=torch.bool, device=P.device)


@register_strategy("none", label="teacher-student (no SAM)")
class Plain(Strategy):
    """Plain teacher-student: the pseudo-label as it is, every pixel weight 1."""

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        return RefineResult(P.bool().clone(), torch.ones_like(p), _unmatched(P))

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        return losses.ce(logits, result.labels)


class Matching(Strategy):
    """The SAM-guided strategies: a sample whose pseudo-label matches candidates learns the
    refined label with CE; an unmatched one keeps P, weighted pixel by pixel by PWA (or plain
    CE without ``pwa``); the two parts are averaged when a batch has both."""

    needs_proposals = True

    def _result(
        self, P: Tensor, p: Tensor, refined: Tensor, matched: Tensor, selected: Tensor, **counts
    ) -> RefineResult:
        cfg = self.cfg
        weights = pwa_weights(p, cfg.pwa_sigma2, cfg.pwa_offset) if cfg.pwa else torch.ones_like(p)
        weights[matched] = 1.0
        return RefineResult(refined, weights, matched, counts, selected)

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        parts = []
        matched, labels = result.matched, result.labels
        if matched.any():
            parts.append(losses.ce(logits[matched], labels[matched]))
        rest = ~matched
        if rest.any():
            if self.cfg.pwa:
                parts.append(losses.pwa(logits[rest], labels[rest], result.weights[rest]))
            else:
                parts.append(losses.ce(logits[rest], labels[rest]))
        return torch.stack(parts).mean()


def _one_hot(index: Tensor, matched: Tensor, k: int) -> Tensor:
    """bool [B, K]: True at ``index`` for the matched samples."""
    selected = torch.zeros(index.shape[0], k, dtype=torch.bool, device=index.device)
    rows = torch.arange(index.shape[0], device=index.device)[matched]
    selected[rows, index[matched]] = True
    return selected


@register_strategy("iom", label="SemiRES-IOM")
class IOM(Matching):
    """IoU-based optimal matching (docs/method.md section 4)."""

    counters = ("matched_iom",)

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        labels, matched, index = iom_from_overlaps(
            P, M, valid, candidate_overlaps(P, M, valid), self.cfg.tau
        )
        selected = _one_hot(index, matched, valid.shape[1])
        return self._result(P, p, labels, matched, selected, matched_iom=int(matched.sum()))


@register_strategy("cpi", label="SemiRES-CPI")
class CPI(Matching):
    """Composite parts integration (docs/method.md section 4); CPI-U / CPI-O switchable."""

    counters = ("matched_cpi_u", "matched_cpi_o")

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        cfg = self.cfg
        by_u, by_o = cpi_rules(candidate_overlaps(P, M, valid), valid, cfg.t1, cfg.t2)
        labels, matched, selected = cpi_union(P, M, by_u, by_o, cfg.cpi_u, cfg.cpi_o)
        return self._result(
            P,
            p,
            labels,
            matched,
            selected,
            matched_cpi_u=int(by_u.any(1).sum()) if cfg.cpi_u else 0,
            matched_cpi_o=int(by_o.any(1).sum()) if cfg.cpi_o else 0,
        )


@register_strategy("confidence", label="confidence-filtered")
class Confidence(Strategy):
    """The confidence-filtered baseline: uncertain pixels are ignored (weight 0)."""

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        _, ignore = confidence_filter(p, self.cfg.confidence)
        return RefineResult(P.bool().clone(), (~ignore).to(p.dtype), _unmatched(P))

    def loss(self, logits: Tensor, result: RefineResult, losses: PixelLosses) -> Tensor:
        return losses.masked(logits, result.labels, result.weights > 0)


@register_strategy("soft", label="soft-IoU matching")
class SoftIOM(Matching):
    """Soft IoU matching against the teacher's probability (ours, beyond the paper)."""

    ours = True

    def labels(self, P: Tensor, p: Tensor, M: Tensor, valid: Tensor) -> RefineResult:
        labels, matched, index, _ = soft_iom(P, p, M, valid, self.cfg.soft_tau)
        selected = _one_hot(index, matched, valid.shape[1])
        return self._result(P, p, labels, matched, selected)
