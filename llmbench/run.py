"""One benchmark run: device -> model -> backend -> sweep, writing each row as it is measured."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmbench.config import BenchmarkConfig
from llmbench.results import (ResultsWriter, load_rows, results_path, run_metadata, save_resolved_config,
                              timestamp, write_csv)
from llmbench.sweep import iter_cells, run_sweep
from llmbench.table import make_console, print_table


def run_benchmark(cfg: BenchmarkConfig, console: Console | None = None) -> List[Dict[str, Any]]:
    """Run the whole sweep of ``cfg``; returns this run's rows (already on disk)."""
    import torch

    from llmbench.backends import build_backend
    from llmbench.models import build_model, resolve_device

    console = console or make_console()
    device = resolve_device(cfg)
    # DeepSpeed (llmbench/distributed.py): this rank's device, init_inference, dtype/sharding/output checks.
    ds_run = None
    if cfg.use_deepspeed:
        from llmbench.distributed import DeepSpeedRun

        ds_run = DeepSpeedRun(cfg, device)
        device = ds_run.device
        if not ds_run.is_main:  # only rank 0 prints the table and writes results
            console = Console(quiet=True)
    start = time.perf_counter()
    model, info = build_model(cfg, ds_run.build_device if ds_run else device)
    if ds_run:
        model = ds_run.wrap(model)
    model_build_s = time.perf_counter() - start
    backend = build_backend(cfg.backend, model, cfg, device)
    meta = run_metadata(cfg, device, info, backend.name)
    meta["model_build_s"] = model_build_s
    if ds_run:
        meta.update(ds_run.row_fields())
        if ds_run.outputs_match is False:
            console.print(f"[red]warning: DeepSpeed's output differs from the plain model's[/red] "
                          f"({ds_run.outputs_compared})")
    is_main = ds_run is None or ds_run.is_main
    config_file = save_resolved_config(cfg) if is_main else None
    writer = ResultsWriter(results_path(cfg)) if is_main else None
    console.print(f"[bold]{cfg.benchmark_name}[/bold]: {info.model_name} ({info.num_params:,} params, "
                  f"{cfg.model_dtype}) on {meta['device_name']} via {meta['backend']}; built in {model_build_s:.1f} s")
    if writer is not None:
        console.print(f"rows -> {writer.path}   config -> {config_file}")

    cells = list(iter_cells(cfg))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("sweep", total=len(cells))

        def on_cell_start(cell):
            progress.update(task, description=f"batch {cell.batch_size} in {cell.input_length} "
                                              f"out {cell.output_length}")

        def on_row(row):
            if writer is not None:
                writer.write({**meta, "timestamp": timestamp(), **row})
            progress.advance(task)

        with torch.inference_mode():
            rows = run_sweep(cfg, backend, info.vocab_size, device, on_row=on_row, on_cell_start=on_cell_start)

    if ds_run:  # the table shows DeepSpeed's verdict on every row
        rows = [{**row, "outputs_match": ds_run.outputs_match} for row in rows]
    if writer is None:
        return rows
    write_csv(load_rows(writer.path), results_path(cfg, "csv"))
    print_table(rows, title=f"{cfg.benchmark_name}: {info.model_name} {cfg.model_dtype} on "
                            f"{meta['device_name']} ({meta['backend']})", console=console)
    console.print(f"{len(rows)} rows appended to {os.path.relpath(writer.path)} "
                  f"(CSV: {os.path.relpath(results_path(cfg, 'csv'))})")
    return rows
