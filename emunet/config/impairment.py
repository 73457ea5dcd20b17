"""Link impairment values as tc writes them (`50ms`, `5%`, `10mbit`) into an `Impairment`. Pure.

Used for the Cluster document's `nodes[].impairment` and for `emunet link set` flags, so both
take the same forms and give the same errors; `emunet.host.tc` applies the result.
"""

from __future__ import annotations

import re

from emunet.errors import InputError
from emunet.model import DISTRIBUTIONS, Impairment

_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_PCT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_TIME_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_RATE_UNIT = {"bit": 1, "kbit": 1000, "mbit": 1000_000, "gbit": 1000_000_000}


class ImpairmentError(InputError, ValueError):
    """A value tc would not take: the message names the field and the expected form."""


def parse_time(field: str, text: str) -> float:
    """'50ms' | '0.5s' | '200us' -> milliseconds."""
    m = _TIME.match(text.strip())
    if m is None:
        raise ImpairmentError(f"{field}: {text!r} is not a duration (write e.g. 50ms)")
    return float(m.group(1)) * _TIME_UNIT[m.group(2)]


def parse_rate(field: str, text: str) -> int:
    """'10mbit' -> bits per second (tc's units: bit, kbit, mbit, gbit; k = 1000)."""
    m = _RATE.match(text.strip().lower())
    if m is None or float(m.group(1)) <= 0:
        raise ImpairmentError(f"{field}: {text!r} is not a rate (write e.g. 10mbit)")
    return int(float(m.group(1)) * _RATE_UNIT[m.group(2)])


def parse_loss(field: str, text: str) -> float:
    """'5%' -> 5.0 (0-100)."""
    m = _PCT.match(text.strip())
    if m is None or float(m.group(1)) > 100:
        raise ImpairmentError(f"{field}: {text!r} is not a percentage 0-100% (write e.g. 5%)")
    return float(m.group(1))


def parse(delay: str | None = None, jitter: str | None = None, loss: str | None = None,
          rate: str | None = None, distribution: str | None = None) -> Impairment:
    """Build an Impairment from tc-style strings; jitter needs a delay (netem's rule)."""
    if distribution is not None and distribution not in DISTRIBUTIONS:
        raise ImpairmentError(f"distribution: {distribution!r} is not one of "
                              f"{', '.join(DISTRIBUTIONS)}")
    imp = Impairment(
        delay_ms=parse_time("delay", delay) if delay else 0.0,
        jitter_ms=parse_time("jitter", jitter) if jitter else 0.0,
        loss_pct=parse_loss("loss", loss) if loss else 0.0,
        rate_bps=parse_rate("rate", rate) if rate else 0,
        distribution=distribution or "uniform")
    if distribution and not imp.jitter_ms:
        raise ImpairmentError("distribution: applies to the jitter; give --jitter too")
    if imp.jitter_ms and not imp.delay_ms:
        raise ImpairmentError("jitter: needs a delay (netem varies the delay by the jitter)")
    if imp.jitter_ms > imp.delay_ms:
        raise ImpairmentError("jitter: larger than the delay (netem would reorder packets)")
    if not imp.active:
        raise ImpairmentError("nothing to set: give --delay, --jitter, --loss or --rate")
    return imp


def describe(imp: Impairment) -> str:
    parts = []
    if imp.delay_ms:
        parts.append(f"delay {imp.delay_ms:g}ms" + (f" ±{imp.jitter_ms:g}ms"
                                                    if imp.jitter_ms else ""))
        if imp.jitter_ms and imp.distribution != "uniform":
            parts[-1] += f" ({imp.distribution})"
    if imp.loss_pct:
        parts.append(f"loss {imp.loss_pct:g}%")
    if imp.rate_bps:
        parts.append(f"rate {imp.rate_bps / 1e6:g}mbit")
    return ", ".join(parts) or "none"
