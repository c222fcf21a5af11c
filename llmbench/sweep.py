"""The grid of cells (batch size x input length x output length) and the measurement of one cell.

One cell: seeded random inputs, ``num_warmup_batches`` untimed calls, then ``num_batches``
timed calls, each synchronised on both sides, each sample kept. TTFT and TPOT come from the
same timed calls (a per-token clock passed to generate as its streamer), not from separate
runs. The number of generated tokens is counted from the output tensor on every call.

The sweep never loses a cell to a failure of another: an out-of-memory error becomes a row
with ``status: oom`` (and larger batches of the same lengths ``skipped``), any other exception
a row with ``status: error``, and the sweep goes on. ``batch_sizes: auto`` replaces the batch
list by a search for the largest batch that fits (``find_max_batch``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from llmbench.config import BenchmarkConfig
from llmbench.memory import GIB, is_out_of_memory, proc_status_bytes, release_memory, short_message
from llmbench.timing import TokenClock, summarize, sync


class TokenCountError(RuntimeError):
    """generate produced a different number of tokens than the cell asked for."""


@dataclass(frozen=True)
class Cell:
    batch_size: int
    input_length: int
    output_length: int


CellKey = Tuple[int, int, int]  # (batch_size, input_length, output_length)


def cell_key(row) -> CellKey:
    """The grid position of a cell or a row."""
    if isinstance(row, Cell):
        return row.batch_size, row.input_length, row.output_length
    return int(row["batch_size"]), int(row["input_length"]), int(row["output_length"])


def iter_cells(cfg: BenchmarkConfig) -> Iterator[Cell]:
    """The sweep in llm-foundry's order: batch size, then input length, then output length.

    With ``batch_sizes: auto`` the batch sizes are not known in advance: nothing is yielded.
    """
    if cfg.batch_sizes == "auto":
        return
    for batch_size in cfg.batch_sizes:
        for input_length in cfg.input_lengths:
            for output_length in cfg.output_lengths:
                yield Cell(batch_size, input_length, output_length)


def make_inputs(seed: int, batch_size: int, input_length: int, vocab_size: int,
                device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random prompt ids of shape (batch, input_length) and an all-ones attention mask.

    Drawn on the CPU from a generator seeded by (seed, batch, input_length), so the same cell
    gets the same ids on every machine, in every run and in any sweep order (resume relies on it).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + batch_size * 10_007 + input_length)
    input_ids = torch.randint(0, vocab_size, (batch_size, input_length), generator=generator)
    input_ids = input_ids.to(device)
    return input_ids, torch.ones_like(input_ids)


class PeakMemory:
    """Peak memory of one cell. CUDA: ``max_memory_allocated`` (reset per cell).

    CPU has no allocator statistics, so the stand-in is the process's peak resident set size
    (VmHWM) after resetting it with ``/proc/self/clear_refs``; it includes the weights and the
    Python runtime, and is null where /proc is unavailable.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "process_peak_rss"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # 5 = reset the peak RSS to the current RSS
            except OSError:
                pass

    def read_gib(self) -> Optional[float]:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / GIB
        peak = proc_status_bytes("VmHWM")
        return peak / GIB if peak is not None else None


def timed_generate(backend, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_length: int,
                   device: torch.device) -> Dict[str, float]:
    """One synchronised generate call: end-to-end latency, TTFT and per-token decode time."""
    clock = TokenClock()
    sync(device)  # nothing queued from before may leak into this call's time
    start = time.perf_counter()
    output = backend.generate(input_ids, attention_mask, output_length, streamer=clock)
    sync(device)  # the call is over only when the device is done
    latency_s = time.perf_counter() - start
    check_token_count(output, clock, input_ids.shape, output_length)
    ttft_s = clock.token_times[0] - start
    # Decode: the time between the first and the last new token, per token after the first.
    tpot_s = ((clock.token_times[-1] - clock.token_times[0]) / (output_length - 1)
              if output_length > 1 else None)
    return {"latency_s": latency_s, "ttft_s": ttft_s, "tpot_s": tpot_s}


def check_token_count(output: torch.Tensor, clock: TokenClock, prompt_shape: torch.Size,
                      output_length: int) -> int:
    """Count the new tokens in the output tensor (and the decode steps seen); raise if not exact."""
    batch_size, input_length = prompt_shape
    new_tokens = (output.shape[-1] - input_length) * output.shape[0]
    expected = batch_size * output_length
    if output.shape[0] != batch_size or new_tokens != expected:
        raise TokenCountError(f"generated {new_tokens} tokens (output shape {tuple(output.shape)}), "
                              f"expected batch {batch_size} x output_length {output_length} = {expected}")
    if len(clock.token_times) != output_length:
        raise TokenCountError(f"saw {len(clock.token_times)} decoding steps, expected {output_length}")
    return new_tokens


def measure_cell(backend, cell: Cell, cfg: BenchmarkConfig, vocab_size: int,
                 device: torch.device, energy_meter=None) -> Dict[str, object]:
    """Warm up, then time calls of one cell until there are ``num_batches`` of them and they add up
    to ``min_duration_s`` (so a fast cell is not a handful of noisy samples); returns the measured
    fields of its row. ``energy_meter`` (hardware.EnergyMeter) is read around the timed calls only."""
    input_ids, attention_mask = make_inputs(cfg.seed, cell.batch_size, cell.input_length, vocab_size, device)
    memory = PeakMemory(device)
    memory.reset()
    warmup_s = []
    for _ in range(cfg.num_warmup_batches):
        warmup_s.append(timed_generate(backend, input_ids, attention_mask, cell.output_length, device)["latency_s"])
    energy_start_j = energy_meter.read_j() if energy_meter is not None else None
    samples: List[Dict[str, float]] = []
    timed_s = 0.0
    while len(samples) < cfg.num_batches or timed_s < cfg.min_duration_s:
        samples.append(timed_generate(backend, input_ids, attention_mask, cell.output_length, device))
        timed_s += samples[-1]["latency_s"]
    energy_end_j = energy_meter.read_j() if energy_meter is not None else None
    peak_memory_gib = memory.read_gib()
    row = cell_metrics(cell, samples, warmup_s, cfg.noise_cv_threshold, peak_memory_gib, memory.kind)
    row.update(energy_fields(energy_start_j, energy_end_j, len(samples) * row["generated_tokens"]))
    return row


def energy_fields(start_j: Optional[float], end_j: Optional[float], tokens: int) -> Dict[str, Optional[float]]:
    """Energy of the timed calls and per generated token; null (not zero) where unmeasured."""
    if start_j is None or end_j is None:
        return {"energy_j": None, "joules_per_token": None}
    return {"energy_j": end_j - start_j, "joules_per_token": (end_j - start_j) / tokens}


def cell_metrics(cell: Cell, samples: List[Dict[str, float]], warmup_s: List[float], noise_cv_threshold: float,
                 peak_memory_gib: Optional[float], peak_memory_kind: str) -> Dict[str, object]:
    """Derive every reported statistic from the kept samples (see README for the formulas)."""
    latency = [s["latency_s"] for s in samples]
    ttft_ms = [s["ttft_s"] * 1e3 for s in samples]
    tpot_ms = [s["tpot_s"] * 1e3 for s in samples if s["tpot_s"] is not None]
    lat = summarize(latency)
    ttft = summarize(ttft_ms)
    tpot = summarize(tpot_ms) if tpot_ms else None
    generated = cell.batch_size * cell.output_length
    return {
        "batch_size": cell.batch_size,
        "input_length": cell.input_length,
        "output_length": cell.output_length,
        "num_samples": len(samples),
        "latency_s": lat["mean"],
        "latency_s_median": lat["median"],
        "latency_s_p90": lat["p90"],
        "latency_s_std": lat["std"],
        "latency_cv": lat["cv"],
        "noisy": lat["cv"] is not None and lat["cv"] > noise_cv_threshold,
        "tokens_per_s": generated / lat["mean"],
        "ms_per_output_token": lat["mean"] * 1e3 / cell.output_length,
        "ttft_ms": ttft["mean"],
        "ttft_ms_median": ttft["median"],
        "tpot_ms": tpot["mean"] if tpot else None,
        "tpot_ms_median": tpot["median"] if tpot else None,
        "decode_tokens_per_s": cell.batch_size / (tpot["mean"] / 1e3) if tpot else None,
        "prefill_tokens_per_s": cell.batch_size * cell.input_length / (ttft["mean"] / 1e3),
        "generated_tokens": generated,  # verified on every call by check_token_count
        "peak_memory_gib": peak_memory_gib,
        "peak_memory_kind": peak_memory_kind,
        "first_call_s": warmup_s[0] if warmup_s else None,
        "warmup_s_samples": warmup_s,
        "latency_s_samples": latency,
        "ttft_ms_samples": ttft_ms,
        "tpot_ms_samples": tpot_ms,
    }


@dataclass
class MaxBatchResult:
    """The outcome of ``find_max_batch`` for one (input, output) pair."""
    largest: Optional[int]  # the largest batch that ran; None if even the smallest tried did not
    tries: List[Tuple[int, str]] = field(default_factory=list)  # (batch, status) in the order tried
    stopped_by: Optional[str] = None  # a status other than ok/oom that ended the search early


def find_max_batch(try_batch: Callable[[int], str], start: int, limit: int) -> MaxBatchResult:
    """The largest batch size in [1, limit] for which ``try_batch`` returns ``"ok"``, assuming
    that every batch above one that returns ``"oom"`` would run out of memory too.

    Doubles from ``start`` until a batch runs out of memory (or ``limit`` is reached), then
    bisects between the last batch that ran and the first that did not: about 2 log2(answer)
    tries. Any other status (an error) stops the search with the best answer so far.
    """
    result = MaxBatchResult(largest=None)

    def attempt(batch: int) -> str:
        status = try_batch(batch)
        result.tries.append((batch, status))
        if status not in ("ok", "oom"):
            result.stopped_by = status
        return status

    fits, too_big = 0, None  # 0: nothing known to fit yet
    batch = start
    while too_big is None:
        status = attempt(batch)
        if status == "ok":
            fits = batch
            if batch >= limit:
                break
            batch = min(2 * batch, limit)
        elif status == "oom":
            too_big = batch
        else:
            break
    # Invariant: `fits` ran (or is 0), `too_big` ran out of memory; the answer lies in between.
    while result.stopped_by is None and too_big is not None and too_big - fits > 1:
        middle = (fits + too_big) // 2
        status = attempt(middle)
        if status == "ok":
            fits = middle
        elif status == "oom":
            too_big = middle
    result.largest = fits or None
    return result


class Sweep:
    """Runs the cells of a sweep, turning failures into rows.

    ``measure(cell)`` returns the measured fields of a row or raises; an out-of-memory error
    becomes ``status: oom``, any other exception ``status: error``. ``prior`` holds rows of an
    earlier run of the same measurement (resume): a cell with an ``ok`` or ``oom`` row there is
    not measured again. ``estimate(cell)`` returns a reason when the cell certainly cannot fit,
    else None; the first such cell of each (input, output) pair is still tried for real.
    """

    def __init__(self, cfg: BenchmarkConfig, measure: Callable[[Cell], Dict[str, object]],
                 on_row: Callable[[Dict[str, object]], None], device: torch.device,
                 on_cell_start: Optional[Callable[[Cell], None]] = None,
                 prior: Optional[Dict[CellKey, Dict[str, object]]] = None,
                 estimate: Optional[Callable[[Cell], Optional[str]]] = None):
        self.cfg, self.measure, self.on_row, self.device = cfg, measure, on_row, device
        self.on_cell_start, self.prior, self.estimate = on_cell_start, prior or {}, estimate
        self.rows: List[Dict[str, object]] = []  # written by this run, in order
        self.reused: List[Dict[str, object]] = []  # rows of an earlier run that stand for cells of this one
        self.max_batch: Dict[Tuple[int, int], MaxBatchResult] = {}  # (input, output) -> search outcome
        self._oom_at: Dict[Tuple[int, int], int] = {}  # (input, output) -> smallest batch that ran out
        self._estimate_tried = set()  # pairs whose first estimate-ruled-out cell was tried for real
        self._estimate_wrong = set()  # pairs where such a cell ran after all: the estimate is not trusted

    def run(self) -> List[Dict[str, object]]:
        """Every cell of the grid, or with ``batch_sizes: auto`` the search for each length pair."""
        if self.cfg.batch_sizes == "auto":
            search = self.cfg.max_batch_search
            for input_length in self.cfg.input_lengths:
                for output_length in self.cfg.output_lengths:
                    # The search tries every batch for real: it is all boundary, no estimate.
                    self.max_batch[(input_length, output_length)] = find_max_batch(
                        lambda b: self.run_cell(Cell(b, input_length, output_length), use_estimate=False),
                        search.start, search.max)
        else:
            for cell in iter_cells(self.cfg):
                self.run_cell(cell)
        return self.rows

    def run_cell(self, cell: Cell, use_estimate: bool = True) -> str:
        """Measure (or reuse, or skip) one cell; writes its row; returns its status."""
        previous = self.prior.get(cell_key(cell))
        if previous is not None and previous.get("status") in ("ok", "oom"):
            self.reused.append(previous)
            self._learn(cell, previous["status"])
            return previous["status"]
        reason = self._skip_reason(cell, use_estimate)
        if reason is not None:
            if previous is not None and previous.get("status") == "skipped":
                self.reused.append(previous)  # decided the same way before: no duplicate row
            else:
                self._emit({"status": "skipped", "reason": reason, **cell.__dict__})
            return "skipped"
        if self.on_cell_start is not None:
            self.on_cell_start(cell)
        failure = None
        try:
            row = {"status": "ok", **self.measure(cell)}
        except Exception as err:  # KeyboardInterrupt is not an Exception: it ends the sweep
            failure = ("oom" if is_out_of_memory(err) else "error", short_message(err))
        finally:
            # Outside the except block: the exception and its frames (holding the failed call's
            # tensors) are gone by now, so this really frees the memory.
            release_memory(self.device)
        if failure is not None:
            row = {"status": failure[0], "error": failure[1], **cell.__dict__}
        self._learn(cell, row["status"])
        self._emit(row)
        return row["status"]

    def _emit(self, row: Dict[str, object]) -> None:
        self.on_row(row)
        self.rows.append(row)

    def _learn(self, cell: Cell, status: str) -> None:
        pair = (cell.input_length, cell.output_length)
        if status == "oom":
            self._oom_at[pair] = min(cell.batch_size, self._oom_at.get(pair, cell.batch_size))
        if self.estimate is not None and self.estimate(cell) is not None:
            self._estimate_tried.add(pair)
            if status == "ok":
                self._estimate_wrong.add(pair)

    def _skip_reason(self, cell: Cell, use_estimate: bool) -> Optional[str]:
        pair = (cell.input_length, cell.output_length)
        oom_batch = self._oom_at.get(pair)
        if self.cfg.skip_larger_after_oom and oom_batch is not None and cell.batch_size > oom_batch:
            return (f"batch {oom_batch} ran out of memory at input {cell.input_length} / output "
                    f"{cell.output_length} (skip_larger_after_oom)")
        if use_estimate and self.estimate is not None and pair in self._estimate_tried \
                and pair not in self._estimate_wrong:
            return self.estimate(cell)  # None when the estimate lets it through
        return None


def run_sweep(cfg: BenchmarkConfig, backend, vocab_size: int, device: torch.device,
              on_row: Callable[[Dict[str, object]], None], on_cell_start: Optional[Callable[[Cell], None]] = None,
              measure: Optional[Callable[[Cell], Dict[str, object]]] = None,
              prior: Optional[Dict[CellKey, Dict[str, object]]] = None,
              estimate: Optional[Callable[[Cell], Optional[str]]] = None,
              energy_meter=None) -> List[Dict[str, object]]:
    """Measure every cell; hand each finished row to ``on_row`` immediately (it writes the file).

    Returns the rows written by this call. ``measure`` defaults to ``measure_cell`` on
    ``backend``; ``prior`` and ``estimate`` are as in ``Sweep``.
    """
    if measure is None:
        def measure(cell: Cell) -> Dict[str, object]:
            return measure_cell(backend, cell, cfg, vocab_size, device, energy_meter)
    return Sweep(cfg, measure, on_row, device, on_cell_start, prior, estimate).run()
