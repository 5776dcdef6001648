"""Summaries of repeated samples: median with min-max and the interquartile range."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Figure", "Summary", "ratio_summary", "summarize"]


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and spread of ``n`` samples (all in the samples' own unit)."""

    n: int
    median: float
    low: float
    high: float
    q1: float
    q3: float
    samples: tuple[float, ...]

    def spread(self, fmt: str = "{:.3g}", scale: float = 1.0) -> str:
        """``min-max (IQR q1-q3)``, each value times ``scale`` and formatted with ``fmt``."""

        def show(value: float) -> str:
            return fmt.format(value * scale)

        text = f"{show(self.low)}-{show(self.high)}"
        if self.n >= 4:
            text += f" (IQR {show(self.q1)}-{show(self.q3)})"
        return text

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        data = asdict(self)
        data["samples"] = list(self.samples)
        return data


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize at least one sample."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(float(s) for s in samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return Summary(
        n=len(ordered),
        median=statistics.median(ordered),
        low=ordered[0],
        high=ordered[-1],
        q1=q1,
        q3=q3,
        samples=tuple(float(s) for s in samples),
    )


def ratio_summary(numerators: Sequence[float], denominators: Sequence[float]) -> Summary:
    """Per-round ratios of paired samples (round i over round i)."""
    if len(numerators) != len(denominators):
        raise ValueError("paired samples must have the same length")
    return summarize([n / d for n, d in zip(numerators, denominators, strict=True)])


@dataclass(slots=True)
class Figure:
    """One line of the report: a headline value, its spread, and an optional target.

    ``target`` is ``(op, bound)`` with ``op`` ``"<="`` or ``">="``; None means the
    figure is informational.
    """

    key: str
    label: str
    value: float
    unit: str
    spread: str
    target: tuple[str, float] | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target (None without a target)."""
        if self.target is None:
            return None
        op, bound = self.target
        return self.value <= bound if op == "<=" else self.value >= bound

    def target_text(self) -> str:
        """``<= 1.2x`` and the like, or ``—``."""
        if self.target is None:
            return "—"
        op, bound = self.target
        return f"{op} {bound:g}{self.unit}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "spread": self.spread,
            "target": None
            if self.target is None
            else {"op": self.target[0], "bound": self.target[1]},
            "met": self.met,
            "note": self.note,
        }
