"""Metrics: leased's private METRICS command and ``leased client metrics``.

The text must be valid Prometheus exposition format, checked by a strict
parser written here (every sample under a declared family, no duplicate
series, histogram buckets cumulative and ending at +Inf == count), and its
numbers must follow the daemon's state: a held lease appears, moves from
exclusive to gone on release, and leaves with its process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clitools import leased_client
from daemons import Daemon, LeaseFile, init_lease_file, wait_for
from leased_daemons import leased_daemon

from leased.connection import MessageReader, Request
from leased.metrics import Family, LatencyHistogram, Sample, escape_label_value, render
from leased.protocol import HEADER_SIZE, Cmd, Header

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?\}})? (\S+)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


@dataclass
class ParsedFamily:
    type: str
    help: str
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    return float(text)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), text)


def parse_exposition(text: str) -> dict[str, ParsedFamily]:
    """Parse Prometheus text format 0.0.4 strictly; any deviation raises AssertionError."""
    assert text.endswith("\n"), "exposition must end with a newline"
    families: dict[str, ParsedFamily] = {}
    helps: dict[str, str] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        where = f"line {number}: {line!r}"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and name not in helps, where
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and kind in TYPES and name not in families, where
            families[name] = ParsedFamily(kind, helps.get(name, ""))
            current = name
            continue
        assert not line.startswith("#") and line.strip(), where
        match = SAMPLE.match(line)
        assert match is not None, where
        sample_name, label_text, value = match.group(1), match.group(2) or "", match.group(match.lastindex or 0)
        labels = tuple((k, _unescape(v)) for k, v in re.findall(LABEL, label_text))
        assert len({k for k, _ in labels}) == len(labels), f"{where}: repeated label"
        assert current is not None, f"{where}: sample before any TYPE"
        family = families[current]
        allowed = {current} | (
            {f"{current}_bucket", f"{current}_sum", f"{current}_count"} if family.type == "histogram" else set()
        )
        assert sample_name in allowed, f"{where}: not in family {current}"
        key = (sample_name, labels)
        assert key not in family.samples, f"{where}: duplicate series"
        family.samples[key] = _value(value)
    for name, family in families.items():
        if family.type == "histogram":
            _check_histogram(name, family)
    return families


def _check_histogram(name: str, family: ParsedFamily) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (sample_name, labels), value in family.samples.items():
        if sample_name == f"{name}_bucket":
            le = dict(labels)["le"]
            rest = tuple(pair for pair in labels if pair[0] != "le")
            series.setdefault(rest, []).append((_value(le), value))
    for rest, buckets in series.items():
        counts = [count for _, count in sorted(buckets)]
        assert counts == sorted(counts), f"{name}{rest}: buckets not cumulative"
        assert sorted(buckets)[-1][0] == math.inf, f"{name}{rest}: no +Inf bucket"
        assert counts[-1] == family.samples[(f"{name}_count", rest)], f"{name}{rest}: +Inf != count"
        assert (f"{name}_sum", rest) in family.samples


def value(families: dict[str, ParsedFamily], name: str, **labels: str) -> float:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    family = families[name] if name in families else families[base]
    return family.samples[(name, tuple(labels.items()))]


# ---------------------------------------------------------------------------
# The renderer and the parser on their own


def test_render_escapes_labels_and_parses_back() -> None:
    histogram = LatencyHistogram()
    for seconds in (0.001, 0.02, 0.02, 3.0, 99.0):
        histogram.observe(seconds)
    text = render(
        [
            Family("t_gauge", "a gauge", "gauge", [Sample({"lockspace": 'we"ird\\name\nx'}, 2.5), Sample({}, 1)]),
            Family("t_latency", "a histogram", "histogram", histograms=[({"lockspace": "LS"}, histogram)]),
        ]
    )
    families = parse_exposition(text)
    assert value(families, "t_gauge", lockspace='we"ird\\name\nx') == 2.5
    assert value(families, "t_latency_count", lockspace="LS") == 5
    assert value(families, "t_latency_bucket", lockspace="LS", le="0.025") == 3
    assert value(families, "t_latency_bucket", lockspace="LS", le="+Inf") == 5
    assert escape_label_value('a"b') == 'a\\"b'


@pytest.mark.parametrize(
    "bad",
    [
        "x 1",  # no newline at the end
        "x 1\n",  # sample without TYPE
        '# TYPE x gauge\nx{a="1",a="2"} 1\n',
        "# TYPE x gauge\nx 1\nx 2\n",
        "# TYPE x gauge\ny 1\n",
        '# TYPE x histogram\nx_bucket{le="1"} 2\nx_bucket{le="+Inf"} 1\nx_count 1\nx_sum 0\n',
    ],
)
def test_the_parser_is_strict(bad: str) -> None:
    with pytest.raises(AssertionError):
        parse_exposition(bad)


def test_the_metrics_command_is_framed_as_a_header_only_request() -> None:
    reader = MessageReader()
    reader.feed(Header(Cmd.LEASED_METRICS, length=HEADER_SIZE, seq=7).encode())
    event = reader.next_event()
    assert isinstance(event, Request) and event.header.cmd == Cmd.LEASED_METRICS and event.body == b""
    assert Cmd.LEASED_METRICS > 0xFFFF  # far outside sanlock's command numbers


# ---------------------------------------------------------------------------
# Against a running leased daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with leased_daemon(tmp_path, "leased", "metrics-host") as running:
        yield running


def metrics(daemon: Daemon) -> dict[str, ParsedFamily]:
    proc = leased_client(daemon.run_dir, "metrics")
    assert proc.returncode == 0, proc.stderr
    return parse_exposition(proc.stdout)


def held(families: dict[str, ParsedFamily], mode: str) -> float:
    return value(families, "leased_resources_held", lockspace="LS", mode=mode)


@pytest.mark.slow
def test_metrics_follow_leases_and_renewals(daemon: Daemon, tmp_path: Path) -> None:
    before = metrics(daemon)
    assert value(before, "leased_lockspaces", state="joined") == 0
    assert value(before, "leased_clients", kind="registered") == 0
    assert before["leased_info"].samples[("leased_info", (("version", "3.8.5"), ("host_name", "metrics-host")))] == 1

    client = daemon.client()
    lease_file: LeaseFile = init_lease_file(client, tmp_path / "leases", b"LS", [b"R1", b"R2"], io_timeout=1)
    client.add_lockspace(b"LS", 1, lease_file.path, 0, io_timeout=1)
    with client.register() as me:
        me.acquire(b"LS", b"R1", lease_file.disks(b"R1"))
        me.acquire(b"LS", b"R2", lease_file.disks(b"R2"), shared=True)
        holding = metrics(daemon)
        assert (held(holding, "exclusive"), held(holding, "shared")) == (1, 1)
        assert value(holding, "leased_clients", kind="registered") == 1
        assert value(holding, "leased_lockspaces", state="joined") == 1
        assert value(holding, "leased_lockspace_host_id", lockspace="LS") == 1
        assert value(holding, "leased_lockspace_io_timeout_seconds", lockspace="LS") == 1
        assert value(holding, "leased_lockspace_renewal_failed", lockspace="LS") == 0
        # Both come from one reading of the clock: age + time left is the 8N failure deadline.
        age = value(holding, "leased_renewal_age_seconds", lockspace="LS")
        left = value(holding, "leased_renewal_expiry_seconds", lockspace="LS")
        assert age >= 0 and left > 0 and math.isclose(age + left, 8, abs_tol=1e-6)
        assert value(holding, "leased_hosts", lockspace="LS", state="live") == 1

        me.release(b"LS", b"R1")
        released = metrics(daemon)
        assert (held(released, "exclusive"), held(released, "shared")) == (0, 1)

    # The registration closed: the daemon releases what the process held.
    wait_for(lambda: held(metrics(daemon), "shared") == 0, 30, "shared lease released after the process left")

    # Renewals every 2N go on; each successful one lands in the counter and the histogram.
    def renewed_twice() -> dict[str, ParsedFamily] | None:
        families = metrics(daemon)
        return families if value(families, "leased_renewals_total", lockspace="LS", result="ok") >= 2 else None

    families = wait_for(renewed_twice, 30, "two renewals counted")
    ok = value(families, "leased_renewals_total", lockspace="LS", result="ok")
    assert value(families, "leased_renewal_duration_seconds_count", lockspace="LS") == ok
    assert value(families, "leased_renewal_last_duration_seconds", lockspace="LS") >= 0

    client.rem_lockspace(b"LS", 1, lease_file.path, 0)
    gone = metrics(daemon)
    assert value(gone, "leased_lockspaces", state="joined") == 0
    assert ("leased_resources_held", (("lockspace", "LS"), ("mode", "shared"))) not in gone[
        "leased_resources_held"
    ].samples
