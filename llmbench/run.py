"""One benchmark run: device -> model -> backend(s) -> sweep, writing each row as it is measured.

Nothing measured is ever lost: each row is on disk (fsynced) before the next cell starts;
``resume: true`` reuses the rows of an interrupted run; Ctrl-C keeps every row, writes the CSV,
prints the table and raises ``SweepInterrupted`` (the CLI exits 130). With ``isolation:
process`` every cell runs in a fresh child process that builds the model itself, so a poisoned
CUDA context or a leak cannot reach later cells; the parent alone writes the file.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from typing import Any, Dict, List, Optional

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmbench.config import BenchmarkConfig, measurement_hash
from llmbench.memory import (DTYPE_BYTES, GIB, CellOutOfMemory, ReportedError, estimate_cell_bytes,
                             free_memory_bytes, is_out_of_memory, release_memory, short_message)
from llmbench.results import (ResultsWriter, load_rows, results_path, run_metadata, save_resolved_config,
                              timestamp, write_csv)
from llmbench.sweep import Cell, CellKey, Sweep, cell_key, iter_cells, make_inputs, measure_cell
from llmbench.table import make_console, print_table

# A row of an earlier run stands for its cell when it was measured; of several, the best wins.
_REUSE_RANK = {"ok": 2, "oom": 2, "skipped": 1, "error": 0}


def seconds_since_process_start() -> float:
    """Wall time since this process was created (the command's start, imports included)."""
    return time.time() - psutil.Process().create_time()


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep, raised after every measured row was kept and the table printed."""

    def __init__(self, rows: List[Dict[str, Any]]):
        super().__init__(f"interrupted after {len(rows)} rows")
        self.rows = rows


# Besides the config, what a row must share with this run to stand for its cell: the same
# backend, on the same hardware, split the same way.
RESUME_IDENTITY = ("backend", "device_name", "device_count", "tp_size", "world_size")


def load_prior_rows(path: str, cfg: BenchmarkConfig, identity: Dict[str, Any]) -> Dict[CellKey, Dict[str, Any]]:
    """The rows of ``path`` measured with the same ``measurement_hash`` as ``cfg`` and the same
    values as ``identity`` (this run's metadata) for the ``RESUME_IDENTITY`` fields it holds, by cell.

    Rows of another configuration never count, so a changed model, dtype or timing setting
    measures everything again; a changed grid reuses the cells it shares with the old one.
    Rows from other hardware, another backend or another tensor-parallel degree never count.
    """
    if not os.path.exists(path):
        return {}
    wanted = measurement_hash(cfg)
    prior: Dict[CellKey, Dict[str, Any]] = {}
    for row in load_rows(path):
        if (row.get("measurement_hash") != wanted or row.get("status") not in _REUSE_RANK
                or any(row.get(k) != identity.get(k) for k in RESUME_IDENTITY if k in identity)):
            continue
        key = cell_key(row)
        old = prior.get(key)
        if old is None or _REUSE_RANK[row["status"]] >= _REUSE_RANK[old["status"]]:
            prior[key] = row
    return prior


def describe_without_weights(cfg: BenchmarkConfig):
    """(hf_config, ModelInfo) of the model, built on the meta device: shapes and sizes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmbench.models import TORCH_DTYPES, build_hf_config, check_model_fits, describe_model

    hf_config = build_hf_config(cfg.model, cfg.max_seq_len)
    check_model_fits(hf_config, cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=TORCH_DTYPES[cfg.model_dtype],
                                                 trust_remote_code=cfg.model.trust_remote_code)
    return hf_config, describe_model(model, cfg)


def make_estimate(cfg: BenchmarkConfig, device, hf_config, extra_bytes: int = 0):
    """``estimate(cell)`` -> a reason when the cell certainly cannot fit in free memory, else None.

    ``extra_bytes``: memory the cell needs that is not resident yet (the weights, when a child
    process builds the model for each cell).
    """
    dtype_bytes = min(DTYPE_BYTES[cfg.model_dtype], DTYPE_BYTES.get(cfg.autocast_dtype, 8))

    def estimate(cell: Cell) -> Optional[str]:
        free = free_memory_bytes(device)
        if free is None:
            return None
        need = extra_bytes + estimate_cell_bytes(hf_config, cell.batch_size, cell.input_length,
                                                 cell.output_length, dtype_bytes, cfg.use_cache)
        if need <= free:
            return None
        what = "weights + KV cache" if extra_bytes else "the KV cache alone"
        return f"memory estimate: {what} needs {need / GIB:.2f} GiB, {free / GIB:.2f} GiB free"

    return estimate


def gate_on_cell(backend, cfg: BenchmarkConfig, cell: Cell, vocab_size: int, device) -> Dict[str, Any]:
    """The correctness gate's row fields for ``backend`` on ``cell``'s inputs; none for eager
    generate, which is the reference. A compiled backend compiles that shape here, outside the
    samples."""
    import torch

    from llmbench.backends import compare_with_eager

    if backend.name == "hf_generate":
        return {}
    ids, mask = make_inputs(cfg.seed, cell.batch_size, cell.input_length, vocab_size, device)
    with torch.inference_mode():
        return compare_with_eager(backend, ids, mask, cell.output_length)


def roofline_basis(cfg: BenchmarkConfig, info, device_name: str, measured=None):
    """(model shape, peaks) that MBU/MFU are computed against, for rows and profiles alike."""
    from dataclasses import replace

    from llmbench.roofline import resolve_peaks

    # The KV cache holds activations: under autocast, in autocast's dtype.
    shape = replace(info.shape, bytes_per_element=DTYPE_BYTES[cfg.compute_dtype])
    peaks = resolve_peaks(device_name, cfg.compute_dtype, cfg.peak_memory_bandwidth_gbs, cfg.peak_tflops, measured)
    return shape, peaks


def measure_in_child(cfg: BenchmarkConfig, backend_name: str, cell: Cell, conn) -> None:
    """The body of an isolated cell: build the model, measure one cell, send the outcome, exit."""
    import torch

    from llmbench.backends import build_backend
    from llmbench.hardware import EnergyMeter
    from llmbench.models import build_model, resolve_device

    # Ctrl-C reaches the whole process group; the parent decides, and ends this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        device = resolve_device(cfg)
        start = time.perf_counter()
        model, info = build_model(cfg, device)
        model_build_s = time.perf_counter() - start
        backend = build_backend(backend_name, model, cfg, device)
        gate = gate_on_cell(backend, cfg, cell, info.vocab_size, device)  # on this cell's own inputs
        energy_meter = EnergyMeter([device.index or 0], enabled=device.type == "cuda")
        with torch.inference_mode():
            fields = measure_cell(backend, cell, cfg, info.vocab_size, device, energy_meter)
        fields.update(backend.compile_stats())
        fields.update(gate)
        conn.send(("ok", {**fields, "model_build_s": model_build_s, "isolation": "process"}))
    except Exception as err:
        conn.send(("oom" if is_out_of_memory(err) else "error", short_message(err)))
    finally:
        conn.close()


class ProcessCellRunner:
    """``measure(cell)`` in a fresh ``spawn`` child process per cell (the model is rebuilt each time)."""

    def __init__(self, cfg: BenchmarkConfig, backend_name: str, poll_s: float = 0.2):
        self.cfg, self.backend_name, self.poll_s = cfg, backend_name, poll_s
        self.context = multiprocessing.get_context("spawn")  # fork would inherit a CUDA context

    def __call__(self, cell: Cell) -> Dict[str, Any]:
        receiver, sender = self.context.Pipe(duplex=False)
        child = self.context.Process(target=measure_in_child, args=(self.cfg, self.backend_name, cell, sender), daemon=True)
        child.start()
        sender.close()  # only the child writes; EOF on the receiver then means the child is gone
        try:
            while not receiver.poll(self.poll_s):
                if not child.is_alive() and not receiver.poll(0):
                    code = child.exitcode
                    hint = " (SIGKILL: possibly the kernel's out-of-memory killer)" if code == -signal.SIGKILL else ""
                    raise ReportedError(f"ChildProcessError: the cell's process exited with code {code} "
                                        f"before reporting{hint}")
            try:
                status, payload = receiver.recv()
            except EOFError:
                raise ReportedError(f"ChildProcessError: the cell's process closed its pipe "
                                    f"(exit code {child.exitcode})") from None
        except BaseException:  # Ctrl-C (or a failure here): the child's measurement is not wanted
            child.terminate()
            raise
        finally:
            child.join(timeout=30)  # after reporting, the child only has to exit
            if child.is_alive():
                child.kill()
                child.join(timeout=10)
            receiver.close()
        if status == "ok":
            return payload
        raise (CellOutOfMemory if status == "oom" else ReportedError)(payload)


def run_benchmark(cfg: BenchmarkConfig, console: Console | None = None,
                  startup: Dict[str, float] | None = None) -> List[Dict[str, Any]]:
    """Run the whole sweep of ``cfg`` for each backend; returns this run's rows (already on disk).

    ``startup`` carries the times the entry point measured before calling (imports, config).
    Raises ``SweepInterrupted`` on Ctrl-C, after the rows so far are kept and shown.
    """
    from llmbench.hardware import EnergyMeter, gpu_facts
    from llmbench.models import TORCH_DTYPES, resolve_device
    from llmbench.roofline import measure_peaks

    console = console or make_console()
    startup = dict(startup or {})
    device = resolve_device(cfg)
    # DeepSpeed (distributed.py): this rank's device, init_inference, dtype/sharding/output checks.
    ds_run = None
    if cfg.use_deepspeed:
        from llmbench.distributed import DeepSpeedRun

        ds_run = DeepSpeedRun(cfg, device)
        device = ds_run.device
        if not ds_run.is_main:  # only rank 0 prints the table and writes results
            console = Console(quiet=True)
    is_main = ds_run is None or ds_run.is_main
    # Every rank reads the same file on resume, so all ranks run the same cells (collectives).
    writer = ResultsWriter(results_path(cfg)) if is_main else ReadOnlyResults(results_path(cfg))
    config_file = save_resolved_config(cfg) if is_main else None
    model = None
    if cfg.isolation == "process":
        hf_config, info = describe_without_weights(cfg)
        estimate = make_estimate(cfg, device, hf_config, extra_bytes=info.param_bytes)
        how = "each cell in a fresh process"
    else:
        from llmbench.models import build_model

        start = time.perf_counter()
        model, info = build_model(cfg, ds_run.build_device if ds_run else device)
        if ds_run:
            model = ds_run.wrap(model)
        startup["model_build_s"] = time.perf_counter() - start  # built on the device: includes the move
        estimate = make_estimate(cfg, device, model.config)
        how = f"built in {startup['model_build_s']:.1f} s"
    facts = gpu_facts(device.index or 0) if device.type == "cuda" else gpu_facts(-1)
    measured = measure_peaks(device, TORCH_DTYPES[cfg.compute_dtype]) if cfg.measure_peaks else None
    if ds_run is not None:
        # Each rank would judge skips against its own free memory; ranks that disagree would
        # stop meeting in the same collectives. A DeepSpeed run tries every cell.
        estimate = None
    # Under tensor parallelism every rank's GPU works on each token: rank 0 reads them all (one node).
    gpus = list(range(ds_run.env.world_size)) if ds_run and device.type == "cuda" else [device.index or 0]
    energy_meter = EnergyMeter(gpus, enabled=device.type == "cuda")
    # One run, one run_id: the backends of a run share everything but the backend's own fields.
    meta = run_metadata(cfg, device, info, cfg.backend_names[0])
    meta["measurement_hash"] = measurement_hash(cfg)
    meta.update(facts)
    meta.update({f"startup_{k}": v for k, v in startup.items()})
    rows: List[Dict[str, Any]] = []
    for backend_name in cfg.backend_names:
        context = RunContext(cfg, device, model, info, backend_name, dict(meta, backend=backend_name), measured,
                             energy_meter)
        if ds_run:
            context.meta.update(ds_run.row_fields())
            if ds_run.outputs_match is False:
                console.print(f"[red]warning: DeepSpeed's output differs from the plain model's[/red] "
                              f"({ds_run.outputs_compared})")
        rows.extend(context.sweep(writer, estimate, console, how, config_file))
    return rows


class ReadOnlyResults:
    """The results file as the non-writing ranks of a distributed run see it: read, never written."""

    def __init__(self, path: str):
        self.path = path

    def write(self, row: Dict[str, Any]) -> None:
        pass


class RunContext:
    """One backend's sweep over the grid: its metadata, correctness gate, rows and table."""

    def __init__(self, cfg, device, model, info, backend_name, meta, measured, energy_meter):
        self.cfg, self.device, self.model, self.info = cfg, device, model, info
        self.backend_name, self.energy_meter = backend_name, energy_meter
        self.meta = meta  # this backend's copy of the run's metadata; the gate adds to it
        self.shape, self.peaks = roofline_basis(cfg, info, meta["device_name"], measured)

    def measure_function(self):
        """``measure(cell)`` for this backend: in process, or in a child per cell."""
        if self.model is None:
            return ProcessCellRunner(self.cfg, self.backend_name), None
        from llmbench.backends import build_backend

        backend = build_backend(self.backend_name, self.model, self.cfg, self.device)
        first = next(iter_cells(self.cfg), None)
        if first is not None:  # the correctness gate, on the first cell's inputs
            self.meta.update(gate_on_cell(backend, self.cfg, first, self.info.vocab_size, self.device))

        def measure(cell: Cell) -> Dict[str, Any]:
            row = measure_cell(backend, cell, self.cfg, self.info.vocab_size, self.device, self.energy_meter)
            row.update(backend.compile_stats())  # after the cell: its own compiles are counted
            return row

        return measure, backend

    def finish_row(self, row: Dict[str, Any]) -> Dict[str, Any]:
        """Metadata + measurement + the roofline of an ok cell: the line written to the file."""
        from llmbench.roofline import roofline_fields

        if row["status"] == "ok":
            row.update(roofline_fields(self.shape, self.peaks, row["batch_size"], row["input_length"],
                                       row["output_length"], row["ttft_ms"], row["tpot_ms"],
                                       num_devices=self.meta.get("tp_size") or 1))
        if "outputs_match" in self.meta:  # the table flags a backend whose tokens differ
            row["outputs_match"] = self.meta["outputs_match"]
        if "time_to_first_row_s" not in self.meta:
            self.meta["time_to_first_row_s"] = seconds_since_process_start()
        return {**self.meta, "timestamp": timestamp(), **row}

    def sweep(self, writer, estimate, console, how, config_file) -> List[Dict[str, Any]]:
        import torch

        cfg, meta, info = self.cfg, self.meta, self.info
        measure, backend = self.measure_function()
        prior = load_prior_rows(writer.path, cfg, {k: meta.get(k) for k in RESUME_IDENTITY}) if cfg.resume else {}
        console.print(f"[bold]{cfg.benchmark_name}[/bold]: {info.model_name} ({info.num_params:,} params, "
                      f"{cfg.model_dtype}) on {meta['device_name']} via {meta['backend']}; {how}; "
                      f"peaks: {self.peaks.source}")
        if meta.get("outputs_match") is False:
            first, rank, gap = (meta.get(k) for k in ("first_mismatch_token", "mismatch_eager_rank",
                                                       "mismatch_logit_gap"))
            where = f"; the first {first} new tokens are equal" if first is not None else ""
            if rank is not None:
                where += f", then it picks eager's choice #{rank}, {gap:.3g} below eager's top logit"
            console.print(f"[red]WARNING: {self.backend_name} tokens differ from eager generate "
                          f"({meta['outputs_compared']}{where})[/red]")
        console.print(f"rows -> {writer.path}   config -> {config_file}")
        cells = list(iter_cells(cfg))
        done = sum(1 for c in cells if prior.get(cell_key(c), {}).get("status") in ("ok", "oom"))
        if cfg.resume:
            console.print(f"resume: {len(prior)} cells of this configuration in the results file"
                          + (f", {done} of {len(cells)} cells already measured" if cells else ""))

        interrupted = False
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("sweep", total=(len(cells) - done) if cells else None)

            def on_cell_start(cell: Cell) -> None:
                progress.update(task, description=f"{self.backend_name}: batch {cell.batch_size} "
                                                  f"in {cell.input_length} out {cell.output_length}")

            def on_row(row: Dict[str, Any]) -> None:
                writer.write(self.finish_row(row))
                progress.advance(task)

            sweep = Sweep(cfg, measure, on_row, self.device, on_cell_start=on_cell_start, prior=prior,
                          estimate=estimate if cfg.estimate_memory else None)
            try:
                with torch.inference_mode():
                    sweep.run()
            except KeyboardInterrupt:
                interrupted = True
                release_memory(self.device)
        if backend is not None:
            backend.close()
        if isinstance(writer, ReadOnlyResults):
            return sweep.rows
        tp = f", tp={meta['tp_size']}" if (meta.get("tp_size") or 1) > 1 else ""
        report(cfg, sweep, writer.path, console, f"{cfg.benchmark_name}: {info.model_name} {cfg.model_dtype} on "
                                                 f"{meta['device_name']} ({meta['backend']}{tp})")
        if interrupted:
            console.print(f"[yellow]interrupted[/yellow]: {len(sweep.rows)} rows of this run kept; "
                          "rerun with resume=true to measure the rest")
            raise SweepInterrupted(sweep.rows)
        return sweep.rows


def report(cfg: BenchmarkConfig, sweep: Sweep, path: str, console: Console, title: str) -> None:
    """CSV from the JSONL, then the table of this sweep's cells (reused ones included)."""
    csv_path = results_path(cfg, "csv")
    if os.path.exists(path):
        write_csv(load_rows(path), csv_path)
    if cfg.batch_sizes == "auto":
        order = {}  # by length pair, then batch: the search's own grouping
    else:
        order = {cell_key(c): i for i, c in enumerate(iter_cells(cfg))}
    rows = sorted(sweep.reused + sweep.rows, key=lambda r: (order.get(cell_key(r), 0), r["input_length"],
                                                            r["output_length"], r["batch_size"]))
    print_table(rows, title=title, console=console)
    for (input_length, output_length), found in sweep.max_batch.items():
        tried = ", ".join(f"{b}:{s}" for b, s in found.tries)
        largest = found.largest if found.largest is not None else "none"
        note = f" (stopped by {found.stopped_by})" if found.stopped_by else ""
        console.print(f"largest batch that fits, input {input_length} output {output_length}: "
                      f"[bold]{largest}[/bold]{note}  tried {tried}")
    counts = {s: sum(1 for r in sweep.rows if r["status"] == s) for s in ("ok", "oom", "skipped", "error")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"{len(sweep.rows)} rows appended to {os.path.relpath(path)} ({summary or 'nothing new'}); "
                  f"{len(sweep.reused)} reused; CSV: {os.path.relpath(csv_path)}")
