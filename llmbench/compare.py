"""Two result files side by side: B / A per cell, with differences inside the noise marked as such.

    python benchmark.py compare before.jsonl after.jsonl
    python benchmark.py compare before.jsonl after.jsonl --fail-above 5   # CI: exit 1 on a regression

Cells are matched by (model, batch, input, output, dtype, backend), so the same sweep run on two
machines, two library versions or two commits lines up. Significance is Welch's two-sided
t-test on the kept samples of each cell (p < 0.05); it needs no scipy: the t distribution's
tail comes from the regularized incomplete beta function below. Works without torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from rich.console import Console
from rich.table import Table

from llmbench.report import Row, latest_rows, tp_size

ALPHA = 0.05  # two-sided significance level of the Welch test
# Compared metrics: (row field, its samples field, True when lower is better).
METRICS = (
    ("latency_s", "latency_s_samples", True),
    ("ttft_ms", "ttft_ms_samples", True),
    ("tpot_ms", "tpot_ms_samples", True),
    ("tokens_per_s", None, False),  # samples derived from the latency samples: B x N / latency
)
TIME_METRICS = ("latency_s", "ttft_ms", "tpot_ms")  # "slower" for --fail-above means any of these grew


def match_key(row: Row) -> Tuple:
    """How a cell of A finds its counterpart in B. The hardware is deliberately not in it: comparing
    two machines is one of the uses. A tensor-parallel degree other than 1 is part of the cell."""
    return (row.get("model_name"), row["batch_size"], row["input_length"], row["output_length"],
            row.get("dtype"), row.get("backend"), tp_size(row))


# --- statistics -------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-12:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means of ``a`` and ``b``.

    None when either side has fewer than 2 samples (no variance, so no test). When both sides have
    zero variance the answer is exact: 1.0 for equal means, 0.0 otherwise.
    """
    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        return None
    mean_a, mean_b = sum(a) / n_a, sum(b) / n_b
    var_a = sum((x - mean_a) ** 2 for x in a) / (n_a - 1)
    var_b = sum((x - mean_b) ** 2 for x in b) / (n_b - 1)
    se2_a, se2_b = var_a / n_a, var_b / n_b
    if se2_a + se2_b == 0.0:
        return 1.0 if mean_a == mean_b else 0.0
    t = (mean_b - mean_a) / math.sqrt(se2_a + se2_b)
    # Welch-Satterthwaite degrees of freedom.
    dof = (se2_a + se2_b) ** 2 / (se2_a ** 2 / (n_a - 1) + se2_b ** 2 / (n_b - 1))
    # P(|T| > |t|) for Student's t with dof degrees of freedom.
    return regularized_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def samples_of(row: Row, metric: str, samples_field: Optional[str]) -> List[float]:
    """The kept samples of one metric; tokens/s per call derives from that call's latency."""
    if samples_field is not None:
        return [float(x) for x in row.get(samples_field) or []]
    generated = row["batch_size"] * row["output_length"]
    return [generated / x for x in row.get("latency_s_samples") or [] if x > 0]


# --- the comparison ---------------------------------------------------------------------------

@dataclass
class MetricDiff:
    metric: str
    a: Optional[float]
    b: Optional[float]
    ratio: Optional[float]  # b / a
    p_value: Optional[float]
    lower_is_better: bool

    @property
    def significant(self) -> Optional[bool]:
        """True/False by the Welch test; None when it cannot be run (too few samples)."""
        return None if self.p_value is None else self.p_value < ALPHA

    @property
    def worse_by_pct(self) -> Optional[float]:
        """How much worse B is than A, in percent (negative: better)."""
        if self.ratio is None:
            return None
        return (self.ratio - 1.0) * 100 if self.lower_is_better else (1.0 / self.ratio - 1.0) * 100


@dataclass
class CellDiff:
    key: Tuple
    a: Optional[Row]
    b: Optional[Row]
    metrics: List[MetricDiff] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``, ``only in A``, ``only in B``, or the statuses of the two sides (``ok -> oom``)."""
        if self.a is None:
            return "only in B"
        if self.b is None:
            return "only in A"
        sa, sb = self.a.get("status"), self.b.get("status")
        return "ok" if sa == sb == "ok" else f"{sa} -> {sb}"


def compare_cell(a: Row, b: Row) -> List[MetricDiff]:
    """B against A on each metric that both measured."""
    diffs = []
    for metric, samples_field, lower_is_better in METRICS:
        va, vb = a.get(metric), b.get(metric)
        if va is None or vb is None:
            continue
        ratio = vb / va if va else None
        p_value = welch_p_value(samples_of(a, metric, samples_field), samples_of(b, metric, samples_field))
        diffs.append(MetricDiff(metric, va, vb, ratio, p_value, lower_is_better))
    return diffs


def compare_rows(rows_a: List[Row], rows_b: List[Row]) -> List[CellDiff]:
    """Every cell of A and of B (latest run of each), matched by ``match_key``."""
    by_a = {match_key(r): r for r in latest_rows(rows_a)}
    by_b = {match_key(r): r for r in latest_rows(rows_b)}
    cells = []
    for key in sorted(set(by_a) | set(by_b), key=lambda k: tuple(x if isinstance(x, int) else str(x) for x in k)):
        a, b = by_a.get(key), by_b.get(key)
        diff = CellDiff(key, a, b)
        if a is not None and b is not None and a.get("status") == b.get("status") == "ok":
            diff.metrics = compare_cell(a, b)
        cells.append(diff)
    return cells


def regressions(cells: List[CellDiff], fail_above_pct: float) -> List[str]:
    """Why B is slower than A by more than the threshold: a time metric worse by > PCT and not
    within the noise (significant, or untestable for want of samples), or a cell that was ok in A
    and is not in B."""
    found = []
    for cell in cells:
        where = "batch {1} input {2} output {3}".format(*cell.key)
        if cell.a is not None and cell.b is not None and cell.a.get("status") == "ok" != cell.b.get("status"):
            found.append(f"{where}: {cell.status}")
        for m in cell.metrics:
            if m.metric in TIME_METRICS and m.worse_by_pct is not None and m.worse_by_pct > fail_above_pct \
                    and m.significant is not False:
                found.append(f"{where}: {m.metric} +{m.worse_by_pct:.1f}%")
    return found


# --- the printed table ------------------------------------------------------------------------

def _fmt_diff(m: Optional[MetricDiff]) -> str:
    if m is None or m.ratio is None:
        return "-"
    text = f"{m.ratio:.3f}"
    if m.significant is None:
        return f"{text} [dim](n/a)[/dim]"
    if not m.significant:
        return f"[dim]{text} ns[/dim]"
    worse = (m.ratio > 1) == m.lower_is_better
    return f"[{'red' if worse else 'green'}]{text}[/]"


def print_comparison(cells: List[CellDiff], name_a: str, name_b: str, console: Optional[Console] = None) -> None:
    from llmbench.table import make_console

    console = console or make_console()
    table = Table(title=f"B / A   A = {name_a}   B = {name_b}   (ns: within the noise, Welch p >= {ALPHA}; "
                        "n/a: too few samples to test)", title_justify="left")
    for name in ("model", "dtype", "backend", "batch", "input", "output", "status", "latency", "TTFT", "TPOT",
                 "tokens/s"):
        table.add_column(name, justify="left" if name in ("model", "dtype", "backend", "status") else "right")
    for cell in cells:
        model, batch, input_length, output_length, dtype, backend, tp = cell.key
        by_metric = {m.metric: m for m in cell.metrics}
        status = cell.status if cell.status == "ok" else f"[red]{cell.status}[/red]"
        table.add_row(str(model), str(dtype), f"{backend}" + (f" tp={tp}" if tp > 1 else ""), str(batch),
                      str(input_length), str(output_length), status,
                      *(_fmt_diff(by_metric.get(m)) for m, _, _ in METRICS))
    console.print(table)
    devices = lambda rows: sorted({str(r.get("device_name")) for r in rows if r})  # noqa: E731
    console.print(f"A on {', '.join(devices([c.a for c in cells]))}; B on {', '.join(devices([c.b for c in cells]))}. "
                  "Ratios > 1 mean B takes longer (latency, TTFT, TPOT) or generates faster (tokens/s).")
