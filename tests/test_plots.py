"""Charts: the right files, non-empty, the right count; and the committed assets regenerate."""
import glob

import pytest
import os

from conftest import ROOT, run_cli
from rows import make_row
from llmbench.plots import plot_all


def sweep_rows(with_utilisation=False, input_lengths=(128, 512), output_lengths=(1, 64)):
    """Two systems (one tensor-parallel), inputs 128/512, outputs 1/64, batches 1/2/4, with an OOM."""
    rows = []
    for tp in (1, 2):
        for input_length in input_lengths:
            for output_length in output_lengths:
                for batch in (1, 2, 4):
                    if tp == 1 and batch == 4 and input_length == 512:
                        rows.append(make_row(batch, status="oom", input_length=input_length,
                                             output_length=output_length, tp_size=tp))
                        continue
                    latency = 0.01 * output_length * (1 + batch / 8) + 0.001 * input_length * batch / tp
                    extra = {"mbu": 0.1 * batch, "mfu": 0.05 * batch} if with_utilisation else {}
                    rows.append(make_row(batch, latency, input_length=input_length, output_length=output_length,
                                         ttft_ms=latency * 100, tpot_ms=10.0 if output_length > 1 else None,
                                         tp_size=tp, **extra))
    return rows


def test_every_chart_kind_is_written(tmp_path):
    fmt = "png"
    written = plot_all(sweep_rows(), str(tmp_path), fmt)
    assert {k: len(v) for k, v in written.items()} == {
        "latency-vs-output": 4,  # 2 systems x 2 input lengths
        "latency-vs-throughput": 4,  # 2 input x 2 output lengths
        "prefill-vs-decode": 2,  # 2 input lengths x the one output length > 1
        "utilisation": 0,  # the rows carry no mbu/mfu
    }
    files = sorted(glob.glob(str(tmp_path / f"*.{fmt}")))
    assert len(files) == 10 and all(os.path.getsize(f) > 1000 for f in files)
    assert any("tp2" in os.path.basename(f) for f in written["latency-vs-output"])


def test_utilisation_chart_and_svg(tmp_path):
    written = plot_all(sweep_rows(with_utilisation=True, input_lengths=(512,), output_lengths=(64,)),
                       str(tmp_path), "svg")
    assert {k: len(v) for k, v in written.items()} == {
        "latency-vs-output": 2, "latency-vs-throughput": 1, "prefill-vs-decode": 1, "utilisation": 1}
    assert all(p.endswith(".svg") and os.path.getsize(p) > 1000 for paths in written.values() for p in paths)


def test_only_failed_cells_and_single_points_still_draw(tmp_path):
    rows = [make_row(1, 0.5, ttft_ms=50.0, tpot_ms=7.0), make_row(2, status="oom"),
            make_row(1, status="error", input_length=128, error="boom")]
    written = plot_all(rows, str(tmp_path), "png")
    assert len(written["latency-vs-output"]) == 2 and len(written["latency-vs-throughput"]) == 2
    assert len(written["prefill-vs-decode"]) == 1  # input 128 has no ok cell: nothing to draw


HARDWARE = sorted(os.path.basename(d) for d in glob.glob(os.path.join(ROOT, "results", "*"))
                  if glob.glob(os.path.join(d, "*.jsonl")))


@pytest.mark.parametrize("hardware", HARDWARE)
def test_committed_assets_regenerate_from_committed_results(tmp_path, hardware):
    """assets/<hardware>/ is exactly what `plot results/<hardware>/*.jsonl` draws."""
    results = sorted(glob.glob(os.path.join(ROOT, "results", hardware, "*.jsonl")))
    proc = run_cli("plot", *results, "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    produced = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "*.png")))
    committed = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "assets", hardware, "*.png")))
    assert produced == committed and all(os.path.getsize(tmp_path / p) > 1000 for p in produced)
    assert f"{len(produced)} charts written" in proc.stdout


def test_committed_results_of_cpu_and_gpu_exist():
    assert "cpu" in HARDWARE and any(h != "cpu" for h in HARDWARE)
