"""PNG plots of a sweep (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402  (must follow the backend choice)
from matplotlib.ticker import FuncFormatter  # noqa: E402

from loadtests.stats import LoadPointSummary  # noqa: E402

# Plain numbers on log axes (0.5, 2, 10), not 5x10^-1.
PLAIN = FuncFormatter(lambda v, _: f"{v:g}")
# Minor ticks labelled only at 2x and 5x a power of ten, so a log axis does not get crowded.
SPARSE = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")

MODE_COLOURS = {"continuous": "tab:green", "request": "tab:blue", "serial": "tab:red", "external": "tab:gray"}


def _colour(label: str) -> str | None:
    """Plain modes keep their colour; variants (``continuous@slots=16``) get matplotlib's next one."""
    return MODE_COLOURS.get(label)


def _by_mode(summaries: Sequence[LoadPointSummary]) -> dict[str, list[LoadPointSummary]]:
    out: dict[str, list[LoadPointSummary]] = {}
    for s in summaries:
        out.setdefault(s.mode, []).append(s)
    for points in out.values():
        points.sort(key=lambda s: s.offered_rps)
    return out


def plot_throughput_vs_p99(summaries: Sequence[LoadPointSummary], path: Path, title: str) -> None:
    """The latency-throughput curve: a better mode sits lower (faster) and further right (more work)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mode, points in _by_mode(summaries).items():
        ax.plot(
            [p.throughput_rps for p in points],
            [p.p99_s for p in points],
            marker="o",
            label=mode,
            color=_colour(mode),
        )
    slo = summaries[0].slo_s if summaries else None
    if slo:
        ax.axhline(slo, color="k", linestyle=":", linewidth=1, label=f"latency target {slo:g}s")
    ax.set_xlabel("achieved throughput (requests/s)")
    ax.set_ylabel("p99 latency (s)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PLAIN)
    ax.yaxis.set_minor_formatter(SPARSE)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency_vs_load(summaries: Sequence[LoadPointSummary], path: Path, title: str) -> None:
    """p50/p95/p99 against offered load, one panel per mode, plus 429 and error rates."""
    groups = _by_mode(summaries)
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.5 * max(len(groups), 1), 4), squeeze=False)
    for ax, (mode, points) in zip(axes[0], groups.items(), strict=False):
        x = [p.offered_rps for p in points]
        for attr, style in (("p50_s", "-"), ("p95_s", "--"), ("p99_s", ":")):
            ax.plot(x, [getattr(p, attr) for p in points], style, marker="o", label=attr[:-2])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_minor_formatter(SPARSE)
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel("latency (s)")
        ax.set_title(mode)
        ax.grid(True, which="both", alpha=0.3)
        rates = ax.twinx()
        rates.bar(
            x,
            [100 * (p.rate_429 + p.rate_error) for p in points],
            width=0.04 * max(x),
            alpha=0.25,
            color="tab:red",
            label="429 + errors",
        )
        rates.set_ylabel("rejected or failed (%)")
        rates.set_ylim(0, 100)
        ax.legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_goodput_occupancy(summaries: Sequence[LoadPointSummary], path: Path, title: str) -> None:
    """Goodput and the engine's mean batch occupancy against offered load, all modes on one figure."""
    fig, (ax_g, ax_o) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, points in _by_mode(summaries).items():
        x = [p.offered_rps for p in points]
        colour = _colour(mode)
        ax_g.plot(x, [p.goodput_rps for p in points], marker="o", label=mode, color=colour)
        ax_o.plot(x, [p.mean_batch_occupancy for p in points], marker="o", label=mode, color=colour)
    # Every mode got the same seeded arrivals; draw what was actually sent once, as the ceiling.
    first = next(iter(_by_mode(summaries).values()), [])
    ax_g.plot([p.offered_rps for p in first], [p.arrived_rps for p in first], "k:", linewidth=1,
              label="sent (open loop)")  # fmt: skip
    ax_g.set_xlabel("offered load (requests/s)")
    ax_g.set_ylabel("goodput (answers within target / s)")
    ax_o.set_xlabel("offered load (requests/s)")
    ax_o.set_ylabel("mean batch occupancy (from /metrics)")
    for ax in (ax_g, ax_o):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
