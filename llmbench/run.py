"""One benchmark run: device -> model -> backend(s) -> sweep, writing each row as it is measured."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmbench.config import BenchmarkConfig
from llmbench.results import (ResultsWriter, load_rows, results_path, run_metadata, save_resolved_config,
                              timestamp, write_csv)
from llmbench.sweep import iter_cells, make_inputs, run_sweep
from llmbench.table import make_console, print_table


def seconds_since_process_start() -> float:
    """Wall time since this process was created (the command's start, imports included)."""
    return time.time() - psutil.Process().create_time()


def run_benchmark(cfg: BenchmarkConfig, console: Console | None = None,
                  startup: Dict[str, float] | None = None) -> List[Dict[str, Any]]:
    """Run the whole sweep of ``cfg`` for each backend; returns this run's rows (already on disk).

    ``startup`` carries the times the entry point measured before calling (imports, config).
    """
    import torch

    from llmbench.backends import build_backend, compare_with_eager
    from llmbench.hardware import EnergyMeter, gpu_facts
    from llmbench.models import build_model, resolve_device
    from llmbench.roofline import measure_peaks, resolve_peaks, roofline_fields

    console = console or make_console()
    startup = dict(startup or {})
    device = resolve_device(cfg)
    start = time.perf_counter()
    model, info = build_model(cfg, device)
    startup["model_build_s"] = time.perf_counter() - start  # built on the device: includes the move
    facts = gpu_facts(device.index or 0) if device.type == "cuda" else gpu_facts(-1)
    measured = measure_peaks(device, model.dtype) if cfg.measure_peaks else None
    config_file = save_resolved_config(cfg)
    writer = ResultsWriter(results_path(cfg))
    energy_meter = EnergyMeter([device.index or 0], enabled=device.type == "cuda")
    cells = list(iter_cells(cfg))
    all_rows: List[Dict[str, Any]] = []

    for backend_name in cfg.backend_names:
        backend = build_backend(backend_name, model, cfg, device)
        meta = run_metadata(cfg, device, info, backend.name)
        peaks = resolve_peaks(meta["device_name"], cfg.model_dtype, cfg.peak_memory_bandwidth_gbs,
                              cfg.peak_tflops, measured)
        meta.update(facts)
        meta.update({f"startup_{k}": v for k, v in startup.items()})
        if backend.name != "hf_generate":
            # The correctness gate, on the first cell's inputs (so a compiled backend compiles
            # that shape here, outside the samples).
            first = cells[0]
            ids, mask = make_inputs(cfg.seed, first.batch_size, first.input_length, info.vocab_size, device)
            with torch.inference_mode():
                meta.update(compare_with_eager(backend, ids, mask, first.output_length))
        console.print(f"[bold]{cfg.benchmark_name}[/bold]: {info.model_name} ({info.num_params:,} params, "
                      f"{cfg.model_dtype}) on {meta['device_name']} via {backend.name}; "
                      f"built in {startup['model_build_s']:.1f} s; peaks: {peaks.source}")
        if meta.get("outputs_match") is False:
            console.print(f"[red]WARNING: {backend.name} tokens differ from eager generate "
                          f"({meta['outputs_compared']})[/red]")
        console.print(f"rows -> {writer.path}   config -> {config_file}")

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("sweep", total=len(cells))

            def on_cell_start(cell):
                progress.update(task, description=f"{backend.name}: batch {cell.batch_size} "
                                                  f"in {cell.input_length} out {cell.output_length}")

            def on_row(row):
                if row["status"] == "ok":
                    row.update(roofline_fields(info.shape, peaks, row["batch_size"], row["input_length"],
                                               row["output_length"], row["ttft_ms"], row["tpot_ms"]))
                if "time_to_first_row_s" not in meta:
                    meta["time_to_first_row_s"] = seconds_since_process_start()
                writer.write({**meta, "timestamp": timestamp(), **row})
                progress.advance(task)

            with torch.inference_mode():
                rows = run_sweep(cfg, backend, info.vocab_size, device, on_row=on_row,
                                 on_cell_start=on_cell_start, energy_meter=energy_meter)
        backend.close()
        all_rows.extend(rows)
        print_table(rows, title=f"{cfg.benchmark_name}: {info.model_name} {cfg.model_dtype} on "
                                f"{meta['device_name']} ({backend.name})", console=console)

    write_csv(load_rows(writer.path), results_path(cfg, "csv"))
    console.print(f"{len(all_rows)} rows appended to {os.path.relpath(writer.path)} "
                  f"(CSV: {os.path.relpath(results_path(cfg, 'csv'))})")
    return all_rows
