"""The concurrency plot: throughput against K, one line per contender."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _thousands(value: float, _pos: int) -> str:
    """Axis labels as 2k, 5k, 20k: minor ticks only at 2 and 5 per decade."""
    leading = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    if round(leading) not in (1, 2, 5):
        return ""
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def plot_concurrency(data: Mapping[str, Any], path: Path, subtitle: str) -> None:
    """Median lookups/s per K (log-log), the IQR as error bars; a contender
    that did not run at some K has no point there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullLocator

    levels = data["levels"]
    ks = [level["tasks"] for level in levels]
    names = list(levels[0]["contenders"])
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    markers = "osD^vP*X"
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for level in levels:
            entry = level["contenders"][name]
            if "throughput" not in entry:
                continue
            spread = entry["throughput"]
            xs.append(level["tasks"])
            ys.append(spread["median"])
            lo.append(spread["median"] - spread["q1"])
            hi.append(spread["q3"] - spread["median"])
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            marker=markers[i % len(markers)],
            capsize=3,
            linewidth=1.6,
            label=name,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ks)
    lookups = {level["lookups_per_task"] for level in levels}
    if len(lookups) == 1:
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel(f"concurrent tasks K, {lookups.pop()} point lookups each")
    else:
        ax.set_xticklabels(
            [f"{lv['tasks']}\n({lv['lookups_per_task']}/task)" for lv in levels]
        )
        ax.set_xlabel("concurrent tasks K (point lookups per task)")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.yaxis.set_minor_formatter(FuncFormatter(_thousands))
    ax.set_ylabel("lookups per second (median, IQR bars)")
    ax.set_title(
        f"Point-lookup throughput vs concurrency, pool size {data['pool_size']}\n"
        f"{subtitle}",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", axis="y", alpha=0.15)
    ax.legend(fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
