"""PNG figures of program-level runs (matplotlib, `pip install sgl-lang[bench]`): throughput per
workload and configuration, cache hit rates, latency CDFs."""
from __future__ import annotations

import os
from collections import defaultdict

from .metrics import RunMetrics


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'sgl-lang[bench]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def NullFormatter():
    from matplotlib.ticker import NullFormatter as Null
    return Null()


def _by_workload_config(results: list[RunMetrics]) -> dict:
    """(workload, config) -> runs, in first-seen order."""
    out: dict = defaultdict(list)
    for r in results:
        out[(r.workload, r.config)].append(r)
    return out


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def plot_throughput(results: list[RunMetrics], path: str) -> str:
    """Grouped bars: median programs/s per workload, one bar per configuration (log scale)."""
    plt = _pyplot()
    groups = _by_workload_config(results)
    workloads = list(dict.fromkeys(r.workload for r in results))
    configs = list(dict.fromkeys(r.config for r in results))
    width = 0.8 / len(configs)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for k, config in enumerate(configs):
        xs, ys = [], []
        for i, w in enumerate(workloads):
            runs = groups.get((w, config))
            if runs:
                xs.append(i + (k - (len(configs) - 1) / 2) * width)
                ys.append(_median([r.programs_per_s for r in runs]))
        bars = ax.bar(xs, ys, width, label=config)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(workloads)), workloads, rotation=15)
    ax.set_yscale("log")
    ax.set_ylabel("programs / s (repeats pooled, log scale)")
    ax.set_title("Program throughput per workload")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_hit_rates(results: list[RunMetrics], path: str) -> str:
    """Bars: prefix-cache hit rate per workload and configuration (0% where the cache is off)."""
    plt = _pyplot()
    groups = _by_workload_config(results)
    workloads = list(dict.fromkeys(r.workload for r in results))
    configs = [c for c in dict.fromkeys(r.config for r in results)
               if any(r.cache_hit_rate is not None for r in results if r.config == c)]
    width = 0.8 / max(1, len(configs))
    fig, ax = plt.subplots(figsize=(11, 4))
    for k, config in enumerate(configs):
        xs, ys = [], []
        for i, w in enumerate(workloads):
            rates = [r.cache_hit_rate for r in groups.get((w, config), []) if r.cache_hit_rate is not None]
            if rates:
                xs.append(i + (k - (len(configs) - 1) / 2) * width)
                ys.append(100 * _median(rates))
        bars = ax.bar(xs, ys, width, label=config)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.axhline(90, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(workloads)), workloads, rotation=15)
    ax.set_ylim(0, 105)
    ax.set_ylabel("prompt tokens served from cache (%)")
    ax.set_title("Radix-cache hit rate (cold start included)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def plot_latency_cdfs(results: list[RunMetrics], path: str) -> str:
    """One panel per workload: the empirical CDF of program latency for each configuration."""
    plt = _pyplot()
    groups = _by_workload_config(results)
    workloads = list(dict.fromkeys(r.workload for r in results))
    cols = min(4, len(workloads))
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for i, w in enumerate(workloads):
        ax = axes[i // cols][i % cols]
        span = []
        for config in dict.fromkeys(r.config for r in results):
            lat = sorted(x for r in groups.get((w, config), []) for x in r.latencies_s)
            if lat:
                ax.step(lat, [(j + 1) / len(lat) for j in range(len(lat))], where="post", label=config)
                span += [lat[0], lat[-1]]
        if span and max(span) > 10 * min(span) > 0:  # log only where latencies span a decade
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis collide
        ax.set_title(w, fontsize=9)
        ax.set_xlabel("program latency (s)", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for j in range(len(workloads), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].set_ylabel("fraction of programs")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8)
    fig.suptitle("Latency CDF per workload (all repeats pooled)")
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig, plt, path: str) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
