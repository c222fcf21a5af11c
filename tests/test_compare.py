"""compare: matching cells, ratios, the significance rule (Welch's t-test) and --fail-above."""
import json

import pytest

from conftest import run_cli
from rows import make_row
from llmbench.compare import compare_rows, regressions, welch_p_value


def test_welch_p_value_matches_known_values():
    # t = 1 / sqrt(2 * 0.01 / 3) = 12.25 with 4 degrees of freedom: p = 2.55e-4 (scipy.stats.ttest_ind).
    assert welch_p_value([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]) == pytest.approx(2.552e-4, rel=1e-3)
    # Unequal variances and sizes: t = 3 / sqrt(3.5) = 1.604, Welch dof = 2.685; integrating the t
    # density numerically gives the two-sided p = 0.21759.
    a, b = [10.0, 11.0, 12.0, 13.0, 14.0], [12.0, 15.0, 18.0]
    assert welch_p_value(a, b) == pytest.approx(0.21759, abs=1e-5)
    assert welch_p_value([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0  # no variance, same mean
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0  # no variance, different means
    assert welch_p_value([1.0], [1.0, 2.0]) is None  # one sample: untestable


def rows_pair(a_samples, b_samples, **extra):
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    a = make_row(4, mean(a_samples), samples=a_samples, **extra)
    b = make_row(4, mean(b_samples), samples=b_samples, device_name="NVIDIA A100", **extra)
    return [a], [b]


def test_difference_within_noise_is_not_significant():
    a, b = rows_pair([1.0, 1.2, 0.8, 1.1], [1.05, 1.25, 0.85, 1.15])  # ~5% slower, spread ~20%
    (cell,) = compare_rows(a, b)
    latency = next(m for m in cell.metrics if m.metric == "latency_s")
    assert latency.ratio == pytest.approx(1.075 / 1.025) and latency.significant is False
    tokens = next(m for m in cell.metrics if m.metric == "tokens_per_s")
    assert tokens.ratio == pytest.approx(1.025 / 1.075, rel=0.01) and tokens.significant is False
    assert regressions([cell], 1.0) == []  # slower by > 1 %, but within the noise: no regression


def test_significant_slowdown_fails_above_threshold_only():
    a, b = rows_pair([1.00, 1.01, 0.99, 1.00], [1.20, 1.21, 1.19, 1.20])
    (cell,) = compare_rows(a, b)
    latency = next(m for m in cell.metrics if m.metric == "latency_s")
    assert latency.significant is True and latency.worse_by_pct == pytest.approx(20.0)
    assert regressions([cell], 10.0) == ["batch 4 input 512 output 64: latency_s +20.0%"]
    assert regressions([cell], 25.0) == []
    faster = compare_rows(b, a)  # B faster than A: never a regression
    assert regressions(faster, 0.0) == []


def test_cells_are_matched_and_status_changes_shown():
    a = [make_row(1, 1.0), make_row(2, 1.5), make_row(4, 2.0), make_row(8, status="oom")]
    b = [make_row(1, 1.0, device_name="other"), make_row(2, status="oom"), make_row(16, 3.0),
         make_row(8, status="oom"), make_row(1, 1.0, dtype="fp16")]
    cells = {(c.key[1], c.key[4]): c for c in compare_rows(a, b)}
    assert cells[(1, "bf16")].status == "ok"  # matched across hardware
    assert cells[(2, "bf16")].status == "ok -> oom" and cells[(2, "bf16")].metrics == []
    assert cells[(4, "bf16")].status == "only in A" and cells[(16, "bf16")].status == "only in B"
    assert cells[(8, "bf16")].status == "oom -> oom"
    assert cells[(1, "fp16")].status == "only in B"  # dtype is part of the match
    assert regressions(list(cells.values()), 50.0) == ["batch 2 input 512 output 64: ok -> oom"]


def test_compare_command_exit_status(tmp_path):
    a, b = rows_pair([1.00, 1.01, 0.99, 1.00], [1.20, 1.21, 1.19, 1.20])
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    pa.write_text(json.dumps(a[0]) + "\n")
    pb.write_text(json.dumps(b[0]) + "\n")
    proc = run_cli("compare", str(pa), str(pb), timeout=60)
    assert proc.returncode == 0 and "1.200" in proc.stdout, proc.stderr
    proc = run_cli("compare", str(pa), str(pb), "--fail-above", "10", timeout=60)
    assert proc.returncode == 1 and "regression: batch 4 input 512 output 64: latency_s +20.0%" in proc.stdout
    proc = run_cli("compare", str(pa), str(pa), "--fail-above", "0", timeout=60)
    assert proc.returncode == 0, proc.stdout
