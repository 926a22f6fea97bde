"""The run's closing summary: what the figures showed, in plain sentences.

Who is faster, by how much, on what ("Point lookups, 100 concurrent tasks:
async-db 3.1x sync_to_async, 0.86x a raw psycopg pool"). Figures only, no
verdicts: a ratio is the median of the per-round ratios (each round ran every
contender back to back, so drift between rounds cancels out), as in the
tables above it. Each scenario adds its sentences when it ran; one that did
not run (or failed) adds none.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmarks._env import ASYNCPG, ORM, OURS, PSYCOPG, SYNC
from benchmarks._harness import BASELINE as MICRO_BASELINE
from benchmarks._harness import OURS as MICRO_OURS
from benchmarks._harness import Result, ScenarioResult

#: How a contender is named in a sentence ("3.1x sync_to_async").
PHRASE = {
    SYNC: "sync_to_async",
    ORM: "the ORM's aget()",
    PSYCOPG: "a raw psycopg pool",
    ASYNCPG: "an asyncpg pool",
}
#: The order in which the others are compared with async-db.
OTHERS = (SYNC, ORM, PSYCOPG, ASYNCPG)

HEADER = (
    "summary: what this run showed (async-db with a pool; 2.00x: twice the "
    "other's throughput; medians of per-round ratios, which move by about 10% "
    "from run to run on a shared machine)"
)


def _ratios(pairs: Mapping[str, float | None]) -> str:
    shown = [
        f"{ratio:.2f}x {PHRASE[name]}"
        for name in OTHERS
        if (ratio := pairs.get(name)) is not None
    ]
    return ", ".join(shown)


def _per_round(ours: Sequence[float], other: Sequence[float]) -> float | None:
    """Median over rounds of ``ours_r / other_r`` (None without samples)."""
    pairs = [o / b for o, b in zip(ours, other, strict=False) if b]
    return statistics.median(pairs) if pairs else None


def concurrency(data: Mapping[str, Any]) -> list[str]:
    out = []
    peaks, failed = [], 0
    for level in data.get("levels", []):
        ours = level["contenders"].get(OURS, {})
        if "throughput" not in ours:
            continue
        peaks.append(ours["peak_backends"])
        failed += ours["failed_tasks"]
        k = level["tasks"]
        tasks = "1 task" if k == 1 else f"{k:,} concurrent tasks"
        ratios = {
            name: ratio
            for name, ratio in level["ours_vs"].items()
            if name != OURS and "throughput" in level["contenders"].get(name, {})
        }
        out.append(f"Point lookups, {tasks}: async-db {_ratios(ratios)}.")
    if peaks:
        out.append(
            f"Point lookups, every K: async-db used at most {max(peaks)} server "
            f"connections (its pool holds {data.get('pool_size', '?')}); "
            f"{failed} tasks failed."
        )
    return out


def transactions(data: Mapping[str, Any]) -> list[str]:
    contenders = data.get("contenders", {})
    if OURS not in contenders:
        return []
    ours = contenders[OURS]["rate"]["samples"]
    ratios = {
        name: _per_round(ours, values["rate"]["samples"])
        for name, values in contenders.items()
        if name != OURS
    }
    return [
        f"Short transactions (insert + update), {data['tasks']} concurrent tasks: "
        f"async-db {_ratios(ratios)}."
    ]


def fanout(data: Mapping[str, Any]) -> list[str]:
    contenders = data.get("contenders", {})
    if OURS not in contenders:
        return []

    def ms(name: str, mode: str) -> str:
        return f"{contenders[name][mode]['median']:.1f} ms"

    line = (
        f"{data['queries']} independent 10 ms queries in one request: "
        f"{ms(OURS, 'gather')} with async-db's gather against "
        f"{ms(OURS, 'sequential')} one after the other"
    )
    if SYNC in contenders:
        line += (
            f"; sync_to_async's gather takes {ms(SYNC, 'gather')} (its queries "
            "queue on Django's one thread)"
        )
    return [line + "."]


def latency(data: Mapping[str, Any]) -> list[str]:
    out = []
    for query, entry in data.get("queries", {}).items():
        contenders = entry["contenders"]
        if OURS not in contenders:
            continue
        # Times per query: speed is other_time / ours_time.
        ours = contenders[OURS]["samples"]
        speeds = {
            name: _per_round(values["samples"], ours)
            for name, values in contenders.items()
            if name != OURS
        }
        phrase = {**speeds}
        if PSYCOPG in phrase:
            # One held connection here, not a pool.
            phrase["bare psycopg"] = phrase.pop(PSYCOPG)
        shown = ", ".join(
            f"{ratio:.2f}x {PHRASE.get(name, name)}"
            for name in (SYNC, ORM, "bare psycopg", ASYNCPG)
            if (ratio := phrase.get(name)) is not None
        )
        out.append(f"Sequential round trips ({query}), one task: async-db {shown}.")
    return out


def orm(data: Mapping[str, Any]) -> list[str]:
    """Native aget() against Django's and the raw cursor (``benchmarks.orm``)."""
    from benchmarks.orm import DJANGO, NATIVE, PLAIN, RAW, SLOW

    if "split" not in data:
        return []
    plain_k, slow_k = data["throughput"][PLAIN], data["throughput"][SLOW]
    plain_1, slow_1 = data["latency"][PLAIN], data["latency"][SLOW]
    split = data["split"]
    native_1 = plain_1["contenders"][NATIVE]
    share = split["build_compile_convert_share_of_gap"]
    of_gap = "" if share is None else f" ({share * 100:.0f}%)"
    return [
        f"ORM point lookup by pk, {plain_k['tasks']} concurrent tasks: native "
        f"aget() {plain_k['native_speed_vs'][DJANGO]:.2f}x Django's aget() "
        f"throughput and {plain_k['native_speed_vs'][RAW]:.2f}x a raw async-db "
        f"cursor's (reference ratio: at least 2x Django's).",
        f"ORM point lookup by pk, one task: native aget() takes "
        f"{native_1['median_us']:.0f} us (p99 {native_1['p99_us']:.0f}), "
        f"{plain_1['native_time_vs'][DJANGO]:.2f}x the time of Django's aget() "
        f"and {plain_1['native_time_vs'][RAW]:.2f}x the raw cursor's (reference "
        f"ratios: at most 0.75x and 1.6x); of the "
        f"{split['native_minus_raw_us']:.0f} us native spends beyond the raw "
        f"cursor, Django's query building, compiling and model construction "
        f"take {split['build_compile_convert_us']:.0f} us{of_gap}, and the "
        f"round trip itself, slower after that CPU work than in the raw "
        f"cursor's tight loop, {split['execute_excess_us']:.0f} us.",
        f"ORM lookup spending 2 ms on the server: native aget() "
        f"{slow_k['native_speed_vs'][DJANGO]:.2f}x Django's aget() throughput at "
        f"K={slow_k['tasks']} (Django's runs one query at a time on its one "
        f"thread), {slow_1['native_time_vs'][DJANGO]:.2f}x its time at K=1.",
    ]


def orm_delete(data: Mapping[str, Any]) -> list[str]:
    """Native cascade delete against Django's (``benchmarks.orm_delete``)."""
    from benchmarks.orm_delete import DJANGO, NATIVE

    if "latency" not in data or "throughput" not in data:
        return []
    lat, thr = data["latency"], data["throughput"]
    native_1, django_1 = lat["contenders"][NATIVE], lat["contenders"][DJANGO]
    return [
        f"ORM cascade delete of an author with 20 books: native adelete() "
        f"{thr['native_speed_vs_django']:.2f}x Django's adelete() throughput at "
        f"K={thr['tasks']}; one task: {native_1['median_us']:.0f} us (p99 "
        f"{native_1['p99_us']:.0f}) against {django_1['median_us']:.0f} us (p99 "
        f"{django_1['p99_us']:.0f}), {lat['native_time_vs_django']:.2f}x the time."
    ]


def micro(result: ScenarioResult) -> list[str]:
    parts = []
    for comparison in result.comparisons:
        samples = comparison.samples
        if MICRO_OURS not in samples or MICRO_BASELINE not in samples:
            continue
        ours, base = samples[MICRO_OURS], samples[MICRO_BASELINE]
        extra = statistics.median(o - b for o, b in zip(ours, base, strict=True))
        parts.append(f"{extra:+.1f} us per query ({comparison.query})")
    if not parts:
        return []
    return [
        "Cursor cost, one held connection: async-db's cursor against bare "
        f"psycopg's, {', '.join(parts)}."
    ]


def http(result: Any) -> list[str]:
    pairs = getattr(result, "pairs", [])
    if not pairs:
        return []
    parts = [
        f"{pair.speedup:.2f}x for a {pair.workload} (p99 {pair.ours.p99_ms:.0f} "
        f"against {pair.baseline.p99_ms:.0f} ms)"
        for pair in pairs
    ]
    connections = result.settings.get("connections", "?")
    line = (
        f"Django views over HTTP (uvicorn, {connections} connections), requests/s "
        f"against the ORM's async views: async-db {', '.join(parts)}"
    )
    native = [
        f"{pair.native_speedup:.2f}x for a {pair.workload} (p99 "
        f"{pair.native.p99_ms:.0f} ms)"
        for pair in pairs
        if getattr(pair, "native", None) is not None
    ]
    if native:
        line += f"; async-db's native ORM {', '.join(native)}"
    reference = result.reference
    lookup = pairs[0].baseline.rps.median
    if reference is not None and lookup:
        line += (
            f"; a view with no database serves {reference.rps.median / lookup:.2f}x "
            "the ORM lookup (Django's and uvicorn's own ceiling)"
        )
    out = [line + "."]
    auth = getattr(result, "auth", None)
    if auth is not None:
        from benchmarks.http._auth import DJANGO, NATIVE

        out.append(
            f"A view loading the session and the user and listing 10 books "
            f"(select_related, prefetch_related) over HTTP ({auth.connections} "
            f"connections): async-db's native request path serves "
            f"{auth.ratio:.2f}x the requests/s of Django's async path "
            f"({auth.rps(NATIVE):,.0f} against {auth.rps(DJANGO):,.0f}; p99 "
            f"{auth.p99(NATIVE):.0f} against {auth.p99(DJANGO):.0f} ms; "
            f"{auth.errors(NATIVE) + auth.errors(DJANGO)} errors)."
        )
    return out


def deploy(result: Any) -> list[str]:
    """1 against 2 workers, direct and through PgBouncer (``benchmarks.deploy``)."""
    from benchmarks.deploy import BOUNCER, DIRECT

    rows = getattr(result, "rows", [])
    if not rows:
        return []
    connections = result.settings.get("connections", "?")
    parts = []
    for via in (DIRECT, BOUNCER):
        one, two = result.row(1, via), result.row(2, via)
        if one is None or two is None or not one.rps:
            continue
        where = "directly" if via == DIRECT else "through PgBouncer (transaction mode)"
        parts.append(
            f"{where}, 2 workers serve {two.rps / one.rps:.2f}x the requests/s of "
            f"1 (p99 {two.p99_ms:.0f} against {one.p99_ms:.0f} ms) on at most "
            f"{two.peak_backends} server backends"
        )
    if not parts:
        return []
    line = f"Native ORM lookup over HTTP ({connections} connections), " + "; ".join(
        parts
    )
    errors = sum(r.errors for r in rows)
    line += f"; {errors} errors"
    if result.skipped:
        line += f" (PgBouncer rows skipped: {result.skipped})"
    return [line + "."]


def _data(fn: Callable[[Mapping[str, Any]], list[str]]) -> Callable[[Any], list[str]]:
    def read(result: Any) -> list[str]:
        return fn(result.data) if isinstance(result, ScenarioResult) else []

    return read


#: scenario name -> its sentences, in the order they are printed.
SENTENCES: dict[str, Callable[[Any], list[str]]] = {
    "concurrency": _data(concurrency),
    "orm": _data(orm),
    "orm_delete": _data(orm_delete),
    "transactions": _data(transactions),
    "fanout": _data(fanout),
    "http": http,
    "deploy": deploy,
    "latency": _data(latency),
    "micro": lambda r: micro(r) if isinstance(r, ScenarioResult) else [],
}


def lines(results: Sequence[Result]) -> list[str]:
    """The summary's sentences for the scenarios that ran."""
    by_name = {result.scenario: result for result in results}
    out: list[str] = []
    for name, sentences in SENTENCES.items():
        if name not in by_name:
            continue
        try:
            out.extend(sentences(by_name[name]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            # A figure missing from a result must not cost the run its JSON.
            out.append(f"{name}: no summary ({type(exc).__name__}: {exc}).")
    return out


def render(results: Sequence[Result]) -> str:
    """The closing section ("" when no scenario gave a sentence)."""
    found = lines(results)
    if not found:
        return ""
    return "\n".join([HEADER, *(f"- {line}" for line in found)]) + "\n"


__all__ = ["lines", "render"]
