"""The questions behind the charts, on hand-made rows with known answers: the frontier, the best
throughput under a limit, interpolation, latest run per cell, and cells that are not ok."""
import json
import sys

import pytest

from conftest import run_cli
from rows import make_row
from llmbench.report import (Point, best_throughput_table, best_under_limit, describe_not_ok, interpolate_at_limit,
                             latest_rows, pareto_frontier, to_points)


def pts(*pairs):
    return [Point(lat, tps, batch) for batch, (lat, tps) in enumerate(pairs, start=1)]


def test_frontier_drops_dominated_points():
    points = pts((1.0, 10), (2.0, 30), (2.5, 20), (3.0, 40), (3.0, 35), (4.0, 40))
    # (2.5, 20) is beaten by (2.0, 30); (3.0, 35) by (3.0, 40); (4.0, 40) by (3.0, 40).
    assert [(p.latency, p.tokens_per_s) for p in pareto_frontier(points)] == [(1.0, 10), (2.0, 30), (3.0, 40)]


def test_frontier_keeps_exact_ties_and_single_points():
    ties = pts((1.0, 10), (1.0, 10), (2.0, 20))
    assert [p.batch_size for p in pareto_frontier(ties)] == [1, 2, 3]
    assert pareto_frontier(pts((5.0, 7))) == pts((5.0, 7))
    assert pareto_frontier([]) == []


def test_best_under_limit_and_ties():
    points = pts((1.0, 10), (2.0, 30), (2.0, 30), (3.0, 30), (4.0, 50))
    assert best_under_limit(points, 3.5).batch_size == 2  # tie on tokens/s: lower latency, then smaller batch
    assert best_under_limit(points, 2.0).batch_size == 2  # the limit is inclusive
    assert best_under_limit(points, None).batch_size == 5  # no limit: the top throughput
    assert best_under_limit(points, 0.5) is None  # nothing meets it
    assert best_under_limit(pts((1.0, 10)), 1.0).batch_size == 1  # a single point


def test_interpolation_is_between_bracketing_frontier_points_only():
    points = pts((1.0, 10), (3.0, 30))
    assert interpolate_at_limit(points, 2.0) == pytest.approx(20.0)
    assert interpolate_at_limit(points, 3.0) is None  # measured exactly: nothing to interpolate
    assert interpolate_at_limit(points, 5.0) is None and interpolate_at_limit(points, 0.5) is None
    assert interpolate_at_limit(pts((1.0, 10)), 2.0) is None


def test_oom_rows_are_reported_not_dropped():
    rows = [make_row(1, 1.0), make_row(2, 1.5), make_row(4, status="oom"), make_row(8, status="oom"),
            make_row(16, status="skipped", reason="larger than an oom batch")]
    assert len(to_points(rows)) == 2
    assert describe_not_ok(rows) == "oom at batch 4, 8; skipped at batch 16"
    (line,) = best_throughput_table(rows, "latency_s", 1.2)
    assert line.best.batch_size == 1 and line.not_ok.startswith("oom at batch 4, 8")
    (line,) = best_throughput_table([make_row(1, status="oom")], "latency_s", 1.0)
    assert line.best is None and line.measured == 0 and line.not_ok == "oom at batch 1"


def test_tpot_limit_uses_tpot_and_skips_cells_without_it():
    rows = [make_row(1, 1.0, tpot_ms=10.0), make_row(4, 2.0, tpot_ms=20.0), make_row(8, 3.0, tpot_ms=None)]
    (line,) = best_throughput_table(rows, "tpot_ms", 15.0)
    assert line.best.batch_size == 1 and line.best.latency == 10.0
    (line,) = best_throughput_table(rows, "tpot_ms", 25.0)
    assert line.best.batch_size == 4 and line.measured == 2


def test_systems_are_told_apart_including_tensor_parallel():
    rows = [make_row(1, 1.0), make_row(1, 0.6, tp_size=2), make_row(1, 0.9, device_name="NVIDIA A100"),
            make_row(1, 0.8, tp_size=None)]  # tp_size null = 1: the same system as the first row
    lines = best_throughput_table(latest_rows(rows))
    assert len(lines) == 3
    assert {line.best.latency for line in lines} == {0.8, 0.6, 0.9}


def test_latest_run_per_cell_wins():
    rows = [make_row(1, 1.0, run_id="20260101T000000Z-aaaaaa"), make_row(1, 2.0, run_id="20260301T000000Z-bbbbbb"),
            make_row(1, 3.0, run_id="20260201T000000Z-cccccc"), make_row(2, 4.0, run_id="20260101T000000Z-aaaaaa")]
    kept = latest_rows(rows)
    assert sorted((r["batch_size"], r["latency_s"]) for r in kept) == [(1, 2.0), (2, 4.0)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_report_command_prints_best_frontier_and_oom(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [make_row(1, 1.0), make_row(2, 1.5), make_row(4, 2.5),
                                             make_row(8, status="oom")])
    proc = run_cli("report", path, "--max-latency", "2", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Best throughput with latency_s <= 2 s" in out and "Pareto frontier" in out
    assert "oom at batch 8" in out and "(interpolated)" in out
    assert "~93.9" in out  # halfway between 2 x 64 / 1.5 s = 85.3 and 4 x 64 / 2.5 s = 102.4 tokens/s
    line = next(l for l in out.splitlines() if "mpt-7b bf16 on NVIDIA H100" in l and "85.3" in l)
    assert "│     2 │" in line  # 2 x 64 / 1.5 s = 85.3 tokens/s at batch 2


@pytest.mark.parametrize("args, fragment", [
    (["report", "missing.jsonl"], "does not exist"),
    (["report", "{ok}", "--max-latency", "1", "--max-tpot-ms", "5"], "not allowed with"),
    (["report", "{ok}", "--max-latency", "-1"], "must be > 0"),
    (["report", "{bad}"], "not a JSON row"),
    (["compare", "{ok}"], "required"),
    (["plot", "{ok}", "--format", "jpg"], "invalid choice"),
])
def test_bad_analysis_arguments_exit_2_with_one_line(tmp_path, capsys, args, fragment):
    import benchmark  # in-process: the same entry point as the command line, without a new interpreter


    ok = write_jsonl(tmp_path / "ok.jsonl", [make_row(1, 1.0)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n" + json.dumps(make_row(1, 1.0)) + "\n")
    assert benchmark.main([a.format(ok=ok, bad=str(bad)) for a in args]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_analysis_modules_do_not_import_torch():
    import subprocess
    code = ("import sys; import llmbench.analysis_cli, llmbench.report, llmbench.plots, llmbench.compare; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=__import__("conftest").ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
