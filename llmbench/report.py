"""What the results answer: best throughput under a latency limit, and the latency/throughput frontier.

Works from result rows alone (no torch import), so results measured on one machine can be
analysed on any other:

    python benchmark.py report results/cpu/small-mpt-cpu.jsonl --max-latency 2
    python benchmark.py report results/compare-*.jsonl --max-tpot-ms 50

A *system* is what a curve stands for: model, dtype, hardware, backend and tensor-parallel
degree. A *cell* is one system at one (batch, input length, output length). When a file holds
several runs of the same cell, the latest run is used. Cells that are not ``ok`` (out of
memory, error, skipped) are reported as such, never dropped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from rich.console import Console
from rich.table import Table

# The latency metrics a limit can be put on: (row field, unit shown, command-line flag).
LATENCY_METRICS = {
    "latency_s": ("s", "--max-latency"),
    "ttft_ms": ("ms", "--max-ttft-ms"),
    "tpot_ms": ("ms", "--max-tpot-ms"),
}
THROUGHPUT_FIELD = "tokens_per_s"  # generated tokens (batch x output) per second of a generate call

Row = Dict[str, Any]


class AnalysisError(ValueError):
    """A problem with the analysis input the user can fix (printed as one line, exit 2)."""


# --- loading and grouping ---------------------------------------------------------------------

def load_result_files(paths: Sequence[str]) -> List[Row]:
    """All rows of the given JSONL files, in file order, each tagged with ``_source`` (its path)."""
    from llmbench.results import load_rows  # a plain JSONL reader; imports no torch

    rows: List[Row] = []
    for path in paths:
        if not os.path.isfile(path):
            raise AnalysisError(f"results file {path!r} does not exist")
        try:
            file_rows = load_rows(path)
        except (ValueError, UnicodeDecodeError) as err:
            raise AnalysisError(str(err).splitlines()[0]) from None
        if not file_rows:
            raise AnalysisError(f"results file {path!r} holds no rows")
        for row in file_rows:
            if not isinstance(row, dict) or not all(k in row for k in ("batch_size", "input_length",
                                                                        "output_length", "status")):
                raise AnalysisError(f"{path}: a row lacks batch_size/input_length/output_length/status; "
                                    "is this an llmbench results file?")
            rows.append({**row, "_source": path})
    return rows


def tp_size(row: Row) -> int:
    """Tensor-parallel degree; absent or null in results without DeepSpeed TP means 1."""
    return int(row.get("tp_size") or 1)


def system_key(row: Row) -> Tuple:
    """What one curve stands for: model, dtype, hardware, backend, tensor-parallel degree."""
    return (row.get("model_name"), row.get("dtype"), row.get("device_name") or row.get("device"),
            row.get("backend"), tp_size(row))


def system_label(key: Tuple) -> str:
    """``mpt-6.7b bf16 on NVIDIA H100 (hf_generate, tp=2)``: names model, dtype, device and backend."""
    model, dtype, device, backend, tp = key
    extra = f", tp={tp}" if tp > 1 else ""
    return f"{model} {dtype} on {device} ({backend}{extra})"


def cell_key(row: Row) -> Tuple:
    return (*system_key(row), row["batch_size"], row["input_length"], row["output_length"])


def latest_rows(rows: Iterable[Row]) -> List[Row]:
    """One row per cell: the one from the latest run.

    ``run_id`` starts with the run's UTC start time, so it sorts by time; among rows of the same
    run (or without a run_id) the one read last wins, since runs append to their file.
    """
    best: Dict[Tuple, Tuple[Tuple[str, int], Row]] = {}
    for order, row in enumerate(rows):
        key = cell_key(row)
        rank = (str(row.get("run_id") or ""), order)
        if key not in best or rank >= best[key][0]:
            best[key] = (rank, row)
    return [row for _, row in sorted(best.values(), key=lambda item: item[0][1])]


def group_by(rows: Iterable[Row], key) -> Dict[Any, List[Row]]:
    """Rows grouped by ``key(row)``, groups in first-seen order, rows sorted by batch size."""
    groups: Dict[Any, List[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return {k: sorted(v, key=lambda r: r["batch_size"]) for k, v in groups.items()}


def is_ok(row: Row, *fields: str) -> bool:
    """The cell was measured and has every named metric."""
    return row.get("status") == "ok" and all(row.get(f) is not None for f in fields)


def describe_not_ok(rows: Iterable[Row]) -> str:
    """``oom at batch 32, 64; skipped at batch 128``: every cell that is not ok, by status."""
    by_status: Dict[str, List[int]] = {}
    for row in rows:
        if row.get("status") != "ok":
            by_status.setdefault(str(row.get("status")), []).append(row["batch_size"])
    return "; ".join(f"{status} at batch {', '.join(map(str, sorted(b)))}" for status, b in by_status.items())


# --- the questions ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One measured cell on the latency/throughput plane."""
    latency: float  # in the unit of the chosen latency metric
    tokens_per_s: float
    batch_size: int
    system: Tuple = ()


def to_points(rows: Iterable[Row], latency_field: str = "latency_s") -> List[Point]:
    """The ok cells that have both metrics; the others cannot be placed on the plane."""
    return [Point(row[latency_field], row[THROUGHPUT_FIELD], row["batch_size"], system_key(row))
            for row in rows if is_ok(row, latency_field, THROUGHPUT_FIELD)]


def pareto_frontier(points: Iterable[Point]) -> List[Point]:
    """The points no other point beats: none has lower-or-equal latency and higher-or-equal
    throughput with at least one of the two strictly better. Sorted by latency.

    Exact ties (same latency and throughput) beat neither each other, so all of them stay.
    """
    ordered = sorted(points, key=lambda p: (p.latency, -p.tokens_per_s, p.batch_size))
    frontier: List[Point] = []
    best_tps = float("-inf")  # the highest throughput among strictly faster points so far
    for p in ordered:
        if p.tokens_per_s > best_tps:
            frontier.append(p)
            best_tps = p.tokens_per_s
        elif frontier and (p.latency, p.tokens_per_s) == (frontier[-1].latency, frontier[-1].tokens_per_s):
            frontier.append(p)  # an exact tie with a frontier point
    return frontier


def best_under_limit(points: Iterable[Point], max_latency: Optional[float]) -> Optional[Point]:
    """The highest throughput among points with latency <= the limit (None: no limit).

    Ties in throughput go to the lower latency, then to the smaller batch (less memory).
    Returns None when no point meets the limit.
    """
    feasible = [p for p in points if max_latency is None or p.latency <= max_latency]
    if not feasible:
        return None
    return min(feasible, key=lambda p: (-p.tokens_per_s, p.latency, p.batch_size))


def interpolate_at_limit(points: Iterable[Point], max_latency: float) -> Optional[float]:
    """Throughput where the frontier crosses the limit, linear between the two frontier points that
    bracket it. An estimate, not a measurement (no batch size runs there); None when the limit is
    not strictly between two frontier points."""
    frontier = pareto_frontier(points)
    for lo, hi in zip(frontier, frontier[1:]):
        if lo.latency < max_latency < hi.latency:
            fraction = (max_latency - lo.latency) / (hi.latency - lo.latency)
            return lo.tokens_per_s + fraction * (hi.tokens_per_s - lo.tokens_per_s)
    return None


@dataclass
class BestRow:
    """One line of the report: one system at one (input, output) length."""
    system: Tuple
    input_length: int
    output_length: int
    best: Optional[Point]
    interpolated_tokens_per_s: Optional[float]
    not_ok: str  # the cells that are not ok, e.g. "oom at batch 64"
    measured: int  # ok cells with the metric


def best_throughput_table(rows: Iterable[Row], latency_field: str = "latency_s",
                          max_latency: Optional[float] = None) -> List[BestRow]:
    """For each system and (input, output): the best throughput under the limit and its batch size."""
    groups = group_by(rows, lambda r: (system_key(r), r["input_length"], r["output_length"]))
    result = []
    for (system, input_length, output_length), cells in sorted(groups.items(), key=lambda kv: _sort_key(kv[0])):
        points = to_points(cells, latency_field)
        interpolated = interpolate_at_limit(points, max_latency) if max_latency is not None else None
        result.append(BestRow(system, input_length, output_length, best_under_limit(points, max_latency),
                              interpolated, describe_not_ok(cells), len(points)))
    return result


def frontiers(rows: Iterable[Row], latency_field: str = "latency_s") -> Dict[Tuple[int, int], List[Point]]:
    """The frontier across every system and batch size, per (input, output) length: for each
    latency target, which configuration gives the most throughput."""
    groups = group_by(rows, lambda r: (r["input_length"], r["output_length"]))
    return {lengths: pareto_frontier(to_points(cells, latency_field)) for lengths, cells in sorted(groups.items())}


def _sort_key(key):
    system, input_length, output_length = key
    return (tuple(str(x) for x in system), input_length, output_length)


# --- the printed report -----------------------------------------------------------------------

def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if unit == "s" else f"{value:.1f}"


def print_report(rows: List[Row], latency_field: str = "latency_s", max_latency: Optional[float] = None,
                 console: Optional[Console] = None) -> None:
    """The best-throughput table, then the frontier per (input, output) length."""
    from llmbench.table import make_console

    console = console or make_console()
    unit, _ = LATENCY_METRICS[latency_field]
    limit = f"{latency_field} <= {max_latency:g} {unit}" if max_latency is not None else "no latency limit"
    table = Table(title=f"Best throughput with {limit} (latest run per cell)", title_justify="left")
    for name in ("system", "input", "output", "best tokens/s", "batch", f"{latency_field}",
                 "tokens/s at limit\n(interpolated)", "not ok"):
        table.add_column(name, justify="left" if name in ("system", "not ok") else "right")
    for line in best_throughput_table(rows, latency_field, max_latency):
        cells = [system_label(line.system), str(line.input_length), str(line.output_length)]
        if line.best is None:
            why = "no ok cell meets the limit" if line.measured else f"no ok cell with {latency_field}"
            best = [f"[red]{why}[/red]", "-", "-"]
        else:
            best = [f"{line.best.tokens_per_s:.1f}", str(line.best.batch_size), _fmt(line.best.latency, unit)]
        interpolated = (f"~{line.interpolated_tokens_per_s:.1f}"
                        if line.interpolated_tokens_per_s is not None else "-")
        table.add_row(*cells, *best, interpolated, f"[red]{line.not_ok}[/red]" if line.not_ok else "")
    console.print(table)

    for (input_length, output_length), frontier in frontiers(rows, latency_field).items():
        # A heading line, not a table title: rich would wrap the title to the (narrow) table width.
        console.print(f"\n[bold]Pareto frontier[/bold] of {latency_field} vs. tokens/s, input {input_length} / "
                      f"output {output_length} tokens: no other cell has both lower {latency_field} and more tokens/s")
        table = Table()
        for name in (f"{latency_field}", "tokens/s", "batch", "system"):
            table.add_column(name, justify="left" if name == "system" else "right")
        for p in frontier:
            table.add_row(_fmt(p.latency, unit), f"{p.tokens_per_s:.1f}", str(p.batch_size), system_label(p.system))
        if not frontier:
            table.add_row("-", "-", "-", f"[red]no ok cell with {latency_field}[/red]")
        console.print(table)
