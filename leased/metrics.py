"""Numbers about the daemon in the Prometheus text exposition format (version 0.0.4).

The daemon answers leased's private METRICS command (:mod:`leased.commands`)
with the text this module renders; ``leased client metrics`` prints it, so a
node_exporter textfile collector or a scrape wrapper can take it from there.

This module owns two things and does no I/O:

* :class:`LatencyHistogram`, the cumulative renewal-latency histogram a
  lockspace keeps.  Prometheus histograms are counters that only grow, so it
  is kept apart from the bounded renewal history (``client renewal``), whose
  oldest entries fall off;
* :func:`render`, which turns :class:`Family` values into exposition text:
  one ``# HELP`` and ``# TYPE`` line per family, label values escaped as the
  format requires, families in the order given.

Rules: metric and label names are fixed strings chosen here and in the
collector (:func:`leased.status.metrics_families`); label *values* (lockspace
names) come from clients and disks and are always escaped, never trusted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RENEWAL_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the renewal latency buckets: a healthy local renewal takes milliseconds,
a struggling SAN seconds; anything near io_timeout (10 s by default) is a warning sign."""

MetricType = Literal["gauge", "counter", "histogram"]


@dataclass
class LatencyHistogram:
    """Cumulative histogram of durations in seconds (Prometheus ``histogram`` semantics)."""

    buckets: tuple[float, ...] = RENEWAL_BUCKETS
    counts: list[int] = field(default_factory=list)
    """Observations per bucket (not cumulative), one extra slot for +Inf."""
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if list(self.buckets) != sorted(self.buckets):
            raise ValueError("histogram buckets must ascend")
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        index = next((i for i, bound in enumerate(self.buckets) if seconds <= bound), len(self.buckets))
        self.counts[index] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` for every bucket, ending with ``(inf, count)``."""
        running, out = 0, []
        for bound, count in zip((*self.buckets, math.inf), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


Labels = Mapping[str, str]


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


@dataclass(frozen=True)
class Family:
    """One metric family: a name, its help text, its type, and samples (or histograms)."""

    name: str
    help: str
    type: MetricType
    samples: Sequence[Sample] = ()
    histograms: Sequence[tuple[Labels, LatencyHistogram]] = ()


def escape_label_value(value: str) -> str:
    """Backslash, double quote and newline escaped, as the exposition format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(labels: Labels, extra: Iterable[tuple[str, str]] = ()) -> str:
    pairs = [*labels.items(), *extra]
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{escape_label_value(value)}"' for key, value in pairs) + "}"


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families``; ends with a newline (empty string for no families)."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            lines.append(f"{family.name}{_labels(sample.labels)} {format_value(sample.value)}")
        for labels, histogram in family.histograms:
            for bound, count in histogram.cumulative():
                le = ("le", format_value(bound))
                lines.append(f"{family.name}_bucket{_labels(labels, [le])} {count}")
            lines.append(f"{family.name}_sum{_labels(labels)} {format_value(histogram.total)}")
            lines.append(f"{family.name}_count{_labels(labels)} {histogram.count}")
    return "".join(line + "\n" for line in lines)
