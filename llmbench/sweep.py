"""The grid of cells (batch size x input length x output length) and the measurement of one cell.

One cell: seeded random inputs, ``num_warmup_batches`` untimed calls, then ``num_batches``
timed calls, each synchronised on both sides, each sample kept. TTFT and TPOT come from the
same timed calls (a per-token clock passed to generate as its streamer), not from separate
runs. The number of generated tokens is counted from the output tensor on every call.
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from llmbench.config import BenchmarkConfig
from llmbench.timing import TokenClock, summarize, sync

GIB = 1024 ** 3


class TokenCountError(RuntimeError):
    """generate produced a different number of tokens than the cell asked for."""


@dataclass(frozen=True)
class Cell:
    batch_size: int
    input_length: int
    output_length: int


def iter_cells(cfg: BenchmarkConfig) -> Iterator[Cell]:
    """The sweep in llm-foundry's order: batch size, then input length, then output length."""
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
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / GIB
        except OSError:
            pass
        return None


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
    """Warm up, then time ``num_batches`` calls of one cell; returns the measured fields of its row.

    ``energy_meter`` (hardware.EnergyMeter) is read around the timed calls only."""
    input_ids, attention_mask = make_inputs(cfg.seed, cell.batch_size, cell.input_length, vocab_size, device)
    memory = PeakMemory(device)
    memory.reset()
    warmup_s = []
    for _ in range(cfg.num_warmup_batches):
        warmup_s.append(timed_generate(backend, input_ids, attention_mask, cell.output_length, device)["latency_s"])
    energy_start_j = energy_meter.read_j() if energy_meter is not None else None
    samples = [timed_generate(backend, input_ids, attention_mask, cell.output_length, device)
               for _ in range(cfg.num_batches)]
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


def release_memory(device: torch.device) -> None:
    """Drop cached blocks so that one cell's leftovers (or an OOM) do not shrink the next cell."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_sweep(cfg: BenchmarkConfig, backend, vocab_size: int, device: torch.device,
              on_row: Callable[[Dict[str, object]], None], on_cell_start: Optional[Callable[[Cell], None]] = None,
              energy_meter=None) -> List[Dict[str, object]]:
    """Measure every cell; hand each finished row to ``on_row`` immediately (it writes the file)."""
    rows = []
    for cell in iter_cells(cfg):
        if on_cell_start is not None:
            on_cell_start(cell)
        try:
            row = {"status": "ok", **measure_cell(backend, cell, cfg, vocab_size, device, energy_meter)}
        except TokenCountError as err:
            row = {"status": "error", "error": f"TokenCountError: {err}", **cell.__dict__}
        finally:
            release_memory(device)
        on_row(row)
        rows.append(row)
    return rows
