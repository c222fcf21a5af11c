"""The charts people run a benchmark for, drawn from result rows alone (matplotlib, no torch import).

    python benchmark.py plot results/cpu/*.jsonl --out assets --format png

1. ``latency-vs-output_<system>_in<L>``: latency against output tokens, one line per batch size,
   one chart per (system, input length). The slope is the time per output token.
2. ``latency-vs-throughput_in<L>-out<N>``: tokens/s against latency across batch sizes, one curve
   per system, points labelled with their batch size. A curve above another is better at every
   latency target.
3. ``prefill-vs-decode_in<L>-out<N>``: TTFT and TPOT against batch size, one line per system.
4. ``utilisation_in<L>-out<N>`` (only where rows carry ``mbu``/``mfu``): the fraction of the
   hardware's memory bandwidth used by decode and of its compute used by prefill.

Cells that are not ``ok`` are drawn as red crosses named by their status, never left out.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; no display needed (or wanted) on a benchmark machine
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from llmbench.report import Row, group_by, is_ok, latest_rows, system_key, system_label  # noqa: E402

FORMATS = ("png", "svg")
FIGSIZE_IN = (8.0, 5.0)  # at DPI 100: 800 px wide, legible when a README scales it to its column
DPI = 100
NOT_OK_COLOR = "tab:red"


def slug(text: str) -> str:
    """A file-name-safe version of a label: lowercase, runs of other characters become '-'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def _system_slug(key: Tuple) -> str:
    model, dtype, device, backend, tp = key
    return slug(f"{model}-{dtype}-{device}-{backend}" + (f"-tp{tp}" if tp > 1 else ""))


def _save(fig, out_dir: str, name: str, fmt: str) -> str:
    path = os.path.join(out_dir, f"{name}.{fmt}")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format=fmt)
    plt.close(fig)
    return path


def _mark_not_ok(ax, rows: List[Row], x_field: str, color=NOT_OK_COLOR, label_prefix: str = "") -> None:
    """A red cross at the bottom of the axes, at the x of each cell that is not ok, named by status,
    so an out-of-memory batch size is visible where it happened."""
    at_bottom = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in axes fraction
    for row in rows:
        if row.get("status") == "ok":
            continue
        ax.plot([row[x_field]], [0.03], marker="x", color=color, markersize=9, mew=2, transform=at_bottom,
                clip_on=False, linestyle="none")
        ax.annotate(f"{label_prefix}{row.get('status')}", (row[x_field], 0.03), xycoords=at_bottom,
                    xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8, color=color)


def _log2_batch_axis(ax, batch_sizes: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ticks = sorted(set(batch_sizes))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(b) for b in ticks])
    ax.minorticks_off()


def _source_note(fig, rows: List[Row]) -> None:
    """Which files the chart was drawn from, in small print at the bottom."""
    sources = sorted({os.path.basename(r["_source"]) for r in rows if r.get("_source")})
    if sources:
        fig.text(0.99, 0.005, "from " + ", ".join(sources), ha="right", va="bottom", fontsize=7, color="gray")


def plot_latency_vs_output(rows: List[Row], out_dir: str, fmt: str) -> List[str]:
    """Chart 1: one chart per (system, input length), one line per batch size."""
    paths = []
    for (system, input_length), cells in group_by(rows, lambda r: (system_key(r), r["input_length"])).items():
        fig, ax = plt.subplots(figsize=FIGSIZE_IN)
        by_batch = group_by(cells, lambda r: r["batch_size"])
        colors = plt.cm.viridis([i / max(1, len(by_batch) - 1) * 0.9 for i in range(len(by_batch))])
        for color, (batch_size, batch_rows) in zip(colors, sorted(by_batch.items())):
            batch_rows = sorted(batch_rows, key=lambda r: r["output_length"])
            ok = [r for r in batch_rows if is_ok(r, "latency_s")]
            not_ok = [r for r in batch_rows if r.get("status") != "ok"]
            label = f"batch {batch_size}" + (f" ({not_ok[0]['status']} at output "
                                              f"{', '.join(str(r['output_length']) for r in not_ok)})"
                                              if not_ok else "")
            ax.errorbar([r["output_length"] for r in ok], [r["latency_s"] for r in ok],
                        yerr=[r.get("latency_s_std") or 0.0 for r in ok], marker="o", color=color,
                        capsize=3, label=label)
            _mark_not_ok(ax, not_ok, "output_length", color=NOT_OK_COLOR, label_prefix=f"b{batch_size} ")
        ax.set_xlabel("output tokens per sequence")
        ax.set_ylabel("latency per generate call (s)")
        ax.set_title(f"Latency vs. output tokens, input {input_length} tokens\n{system_label(system)}",
                     fontsize=11)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(title="error bars: sample std", fontsize=9, title_fontsize=8)
        _source_note(fig, cells)
        paths.append(_save(fig, out_dir, f"latency-vs-output_{_system_slug(system)}_in{input_length}", fmt))
    return paths


def plot_latency_vs_throughput(rows: List[Row], out_dir: str, fmt: str) -> List[str]:
    """Chart 2: one chart per (input, output) length, one curve per system across batch sizes."""
    paths = []
    for (input_length, output_length), cells in group_by(
            rows, lambda r: (r["input_length"], r["output_length"])).items():
        fig, ax = plt.subplots(figsize=FIGSIZE_IN)
        for system, system_rows in group_by(cells, system_key).items():
            ok = [r for r in system_rows if is_ok(r, "latency_s", "tokens_per_s")]
            not_ok = [r for r in system_rows if r.get("status") != "ok"]
            label = system_label(system)
            if not_ok:
                label += "\n  " + "; ".join(f"{r['status']} at batch {r['batch_size']}" for r in not_ok)
            line, = ax.plot([r["latency_s"] for r in ok], [r["tokens_per_s"] for r in ok], marker="o", label=label)
            for r in ok:
                ax.annotate(f"{r['batch_size']}", (r["latency_s"], r["tokens_per_s"]), xytext=(4, 4),
                            textcoords="offset points", fontsize=8, color=line.get_color())
            if ok and not_ok:  # where the curve ends because memory (or something else) ran out
                last = ok[-1]
                ax.annotate(f"batch {not_ok[0]['batch_size']}: {not_ok[0]['status']}",
                            (last["latency_s"], last["tokens_per_s"]), xytext=(8, -14), textcoords="offset points",
                            fontsize=8, color=NOT_OK_COLOR, arrowprops={"arrowstyle": "-", "color": NOT_OK_COLOR})
        ax.set_xlabel("latency per generate call (s)")
        ax.set_ylabel("throughput (generated tokens/s)")
        ax.set_title(f"Latency vs. throughput, input {input_length} / output {output_length} tokens\n"
                     "points labelled with batch size; higher and further left is better", fontsize=11)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        _source_note(fig, cells)
        paths.append(_save(fig, out_dir, f"latency-vs-throughput_in{input_length}-out{output_length}", fmt))
    return paths


def _plot_against_batch(rows: List[Row], out_dir: str, fmt: str, name: str, title: str,
                        panels: Sequence[Tuple]) -> List[str]:
    """One chart per (input, output) length with one panel per (field, panel title, y label[, point
    label function]); one line per system against batch size. Charts with no value in any panel
    are not drawn."""
    paths = []
    for (input_length, output_length), cells in group_by(
            rows, lambda r: (r["input_length"], r["output_length"])).items():
        if not any(is_ok(r, panel[0]) for r in cells for panel in panels):
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=FIGSIZE_IN, squeeze=False)
        for ax, (field, panel_title, y_label, *point_label) in zip(axes[0], panels):
            for system, system_rows in group_by(cells, system_key).items():
                ok = [r for r in system_rows if is_ok(r, field)]
                line, = ax.plot([r["batch_size"] for r in ok], [r[field] for r in ok], marker="o",
                                label=system_label(system))
                for r in ok if point_label else []:
                    ax.annotate(point_label[0](r), (r["batch_size"], r[field]), xytext=(4, -12),
                                textcoords="offset points", fontsize=8, color=line.get_color())
                _mark_not_ok(ax, system_rows, "batch_size")
            _log2_batch_axis(ax, [r["batch_size"] for r in cells])
            ax.set_title(panel_title, fontsize=10)
            ax.set_xlabel("batch size")
            ax.set_ylabel(y_label)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        fig.suptitle(f"{title}, input {input_length} / output {output_length} tokens", fontsize=11)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=1, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.04 * len(labels), 1, 1))
        _source_note(fig, cells)
        path = os.path.join(out_dir, f"{name}_in{input_length}-out{output_length}.{fmt}")
        fig.savefig(path, dpi=DPI, format=fmt)
        plt.close(fig)
        paths.append(path)
    return paths


def _prefill_share(row: Row) -> str:
    """TTFT as a percentage of the whole call: where it grows, prefill starts to matter."""
    return f"{row['ttft_ms'] / 10 / row['latency_s']:.0f}%" if row.get("latency_s") else ""


def plot_prefill_vs_decode(rows: List[Row], out_dir: str, fmt: str) -> List[str]:
    """Chart 3: TTFT and TPOT against batch size (TPOT exists only for output length > 1)."""
    return _plot_against_batch(
        [r for r in rows if r["output_length"] > 1], out_dir, fmt, "prefill-vs-decode", "Prefill vs. decode",
        [("ttft_ms", "prefill: time to first token\n(labels: share of the latency)", "TTFT (ms)",
          _prefill_share),
         ("tpot_ms", "decode: time per output token", "TPOT (ms)")])


def plot_utilisation(rows: List[Row], out_dir: str, fmt: str) -> List[str]:
    """Chart 4, where rows carry them: MBU of decode and MFU of prefill against batch size."""
    if not any(is_ok(r, "mbu") or is_ok(r, "mfu") for r in rows):
        return []
    percent = [{**r, "mbu_pct": r["mbu"] * 100 if r.get("mbu") is not None else None,
                "mfu_pct": r["mfu"] * 100 if r.get("mfu") is not None else None} for r in rows]
    return _plot_against_batch(
        percent, out_dir, fmt, "utilisation", "Hardware utilisation",
        [("mbu_pct", "decode: memory bandwidth utilisation", "MBU (% of peak bandwidth)"),
         ("mfu_pct", "prefill: FLOP utilisation", "MFU (% of peak FLOP/s)")])


def plot_all(rows: List[Row], out_dir: str, fmt: str = "png") -> Dict[str, List[str]]:
    """Every chart for the rows (latest run per cell); returns the written paths by chart kind."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} is invalid: must be one of {list(FORMATS)}")
    os.makedirs(out_dir, exist_ok=True)
    rows = latest_rows(rows)
    return {
        "latency-vs-output": plot_latency_vs_output(rows, out_dir, fmt),
        "latency-vs-throughput": plot_latency_vs_throughput(rows, out_dir, fmt),
        "prefill-vs-decode": plot_prefill_vs_decode(rows, out_dir, fmt),
        "utilisation": plot_utilisation(rows, out_dir, fmt),
    }

