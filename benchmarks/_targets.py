"""Issue 6's targets and reference figures, against what this run measured.

Reported, never asserted: a benchmark on a shared 2-core machine is evidence,
not a test. Every figure comes from the ``concurrency`` scenario: throughput
ratios, judged on the median of the per-round ratios (each round ran every
contender back to back, so drift between rounds cancels out), with the ratio
of the medians shown next to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks._env import ASYNCPG, ORM, OURS, POOL_SIZE, PSYCOPG, SYNC
from benchmarks._harness import Result, ScenarioResult

#: Where the reference figures and targets are measured.
K_MAIN = 100


@dataclass(frozen=True)
class Check:
    what: str
    measured: str
    target: str
    status: str  # "met", "not met", "matches", "differs", "not measured"
    #: The figure judged (a ratio, a peak, a count), for the JSON file.
    value: float | None = None


def _level(data: Mapping[str, Any], k: int) -> Mapping[str, Any] | None:
    for level in data.get("levels", []):
        if level["tasks"] == k:
            return level  # type: ignore[no-any-return]
    return None


def _speed(level: Mapping[str, Any] | None, name: str, key: str) -> float | None:
    """``level[key][name]`` if measured."""
    if level is None:
        return None
    value = level[key].get(name)
    return None if value is None else float(value)


def _both(
    level: Mapping[str, Any] | None, name: str, key: str
) -> tuple[float | None, float | None]:
    """(median of the per-round ratios, ratio of the medians)."""
    return _speed(level, name, key), _speed(level, name, f"{key}_of_medians")


def _shown(
    pair: tuple[float | None, float | None], unit: str = "x", invert: bool = False
) -> str:
    per_round, of_medians = pair
    if per_round is None or of_medians is None:
        return "-"
    if invert:
        per_round, of_medians = 1 / per_round, 1 / of_medians
    return f"{per_round:.2f}{unit} ({of_medians:.2f}x)"


def reference_checks(data: Mapping[str, Any]) -> list[Check]:
    """The issue's measured reference: how the others compare with the
    psycopg pool (``matches`` when inside the quoted range)."""
    level = _level(data, K_MAIN)
    out = []
    for name, low, high in ((SYNC, 3.6, 4.7), (ORM, 7.0, 8.0)):
        pair = _both(level, name, "speed_vs_reference")
        speed = pair[0]
        out.append(
            Check(
                f"{PSYCOPG} vs {name}, K={K_MAIN}",
                _shown(pair, "x faster", invert=True),
                f"{low}-{high}x faster",
                _reference(speed is not None and low <= 1 / speed <= high, speed),
                None if speed is None else 1 / speed,
            )
        )
    pair = _both(level, ASYNCPG, "speed_vs_reference")
    speed = pair[0]
    out.append(
        Check(
            f"{ASYNCPG} vs {PSYCOPG}, K={K_MAIN}",
            _shown(pair, "x faster"),
            "~1.8x faster",
            _reference(speed is not None and 1.5 <= speed <= 2.1, speed),
            speed,
        )
    )
    return out


def target_checks(data: Mapping[str, Any]) -> list[Check]:
    """async-db's targets (pooled: the configuration the targets are for)."""
    out = []
    for k in (1, K_MAIN):
        pair = _both(_level(data, k), OURS, "speed_vs_reference")
        out.append(
            Check(
                f"{OURS} vs {PSYCOPG}, K={k}",
                _shown(pair),
                ">= 0.95x (within 5%)",
                _status(pair[0] is not None and pair[0] >= 0.95, pair[0] is None),
                pair[0],
            )
        )
    level = _level(data, K_MAIN)
    for name, minimum in ((SYNC, 4.0), (ORM, 8.0)):
        pair = _both(level, name, "ours_vs")
        out.append(
            Check(
                f"{OURS} vs {name}, K={K_MAIN}",
                _shown(pair, "x faster"),
                f">= {minimum:.0f}x faster",
                _status(pair[0] is not None and pair[0] >= minimum, pair[0] is None),
                pair[0],
            )
        )
    levels = data.get("levels", [])
    peaks = [lv["contenders"][OURS]["peak_backends"] for lv in levels]
    out.append(
        Check(
            f"{OURS} backends, every K",
            f"peak {max(peaks)}" if peaks else "-",
            f"<= pool size ({POOL_SIZE})",
            _status(bool(peaks) and max(peaks) <= POOL_SIZE, not peaks),
            max(peaks) if peaks else None,
        )
    )
    level = _level(data, 1000)
    failed = None if level is None else level["contenders"][OURS]["failed_tasks"]
    out.append(
        Check(
            f"{OURS} failures, K=1000",
            "-" if failed is None else f"{failed} failed tasks",
            "0",
            _status(failed == 0, failed is None),
            failed,
        )
    )
    return out


def _reference(matches: bool, measured: float | None) -> str:
    if measured is None:
        return "not measured"
    return "matches" if matches else "differs"


def _status(met: bool, missing: bool) -> str:
    if missing:
        return "not measured"
    return "met" if met else "not met"


def checks(results: Sequence[Result]) -> dict[str, list[Check]]:
    """``{"targets": [...], "reference": [...]}``, empty without the
    concurrency scenario."""
    for result in results:
        if isinstance(result, ScenarioResult) and result.scenario == "concurrency":
            return {
                "targets": target_checks(result.data),
                "reference": reference_checks(result.data),
            }
    return {}


def render(groups: Mapping[str, Sequence[Check]]) -> str:
    if not groups:
        return ""
    titles = {
        "targets": "async-db targets (issue 6)",
        "reference": "reference figures quoted by issue 6 (measured elsewhere)",
    }
    rows = [check for group in groups.values() for check in group]
    widths = [max(len(getattr(c, f)) for c in rows) for f in ("what", "measured")]
    lines = [
        "targets: concurrency scenario (lookups/s), median of the per-round "
        "ratios (ratio of the medians in parentheses)",
        "",
    ]
    for key, group in groups.items():
        lines.append(titles[key])
        label = "target" if key == "targets" else "reference"
        for c in group:
            lines.append(
                f"  {c.what.ljust(widths[0])}  {c.measured.ljust(widths[1])}  "
                f"{label} {c.target}: {c.status}"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_json(groups: Mapping[str, Sequence[Check]]) -> dict[str, Any]:
    return {key: [asdict(c) for c in group] for key, group in groups.items()}
