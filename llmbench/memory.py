"""Memory limits as data: recognising an out-of-memory error, releasing memory after one, and a
lower-bound estimate of what a cell needs, to skip cells that certainly cannot fit.

An OOM is a property of the cell (batch x input x output on this device), not a crash of the
sweep: the sweep records it as ``status: oom`` and goes on (sweep.py).
"""
from __future__ import annotations

import gc
import resource
from typing import Optional

import torch

GIB = 1024 ** 3
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}

# CPU: c10's DefaultCPUAllocator raises RuntimeError("... can't allocate memory ..."); CUDA's
# caching allocator raises torch.OutOfMemoryError ("CUDA out of memory"), a RuntimeError subclass.
_OOM_FRAGMENTS = ("can't allocate memory", "out of memory")


class ReportedError(RuntimeError):
    """A cell's failure already formatted where it happened (a child process): its message is kept as is."""


class CellOutOfMemory(ReportedError):
    """A cell ran out of memory where only the message could be seen (a child process)."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA OOM, a CPU allocation failure, or Python's MemoryError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError, CellOutOfMemory)):
        return True
    return isinstance(err, RuntimeError) and any(f in str(err) for f in _OOM_FRAGMENTS)


def short_message(err: BaseException, limit: int = 500) -> str:
    """``Type: the message`` on one line, bounded: CUDA OOM messages carry a long allocator report."""
    text = " ".join(str(err).split())
    if isinstance(err, ReportedError):
        return text[:limit]
    if len(text) > limit:
        text = text[:limit] + " ..."
    return f"{type(err).__name__}: {text}"


def release_memory(device: torch.device) -> None:
    """Drop cached blocks so that one cell's leftovers (or an OOM) do not shrink the next cell.

    Call it outside the ``except`` block that caught an OOM: the traceback's frames hold the
    tensors of the failed call until the exception is gone.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def proc_status_bytes(field: str) -> Optional[int]:
    """A size field of /proc/self/status (``VmHWM``, ``VmSize``, ...) in bytes; None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def free_memory_bytes(device: torch.device) -> Optional[int]:
    """What a cell can still allocate: CUDA free memory, or on CPU the available RAM, bounded by
    the address-space limit (``ulimit -v``) where one is set. None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except Exception:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = proc_status_bytes("VmSize")
        if used is not None:
            free = min(free, soft - used)
    return free


def kv_cache_bytes(hf_config, batch_size: int, sequence_length: int, dtype_bytes: int) -> int:
    """Bytes of the KV cache after ``sequence_length`` positions: 2 (K and V) x layers x batch x
    positions x kv_heads x head_dim x bytes. Every decoder with a cache must hold at least this."""
    from llmbench.models import kv_heads as count_kv_heads

    # transformers' attribute_map gives every config these generic names (MPT: n_layers, ...).
    layers, heads = hf_config.num_hidden_layers, hf_config.num_attention_heads
    kv_heads = count_kv_heads(hf_config)  # multi-query Falcon: 1
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return 2 * layers * batch_size * sequence_length * kv_heads * head_dim * dtype_bytes


def estimate_cell_bytes(hf_config, batch_size: int, input_length: int, output_length: int,
                        dtype_bytes: int, use_cache: bool = True) -> int:
    """A lower bound of the memory a cell needs beyond the weights (already resident).

    Only the KV cache is counted: activations depend on the attention kernel (eager attention
    materialises batch x heads x L x L scores, SDPA/flash do not), and a lower bound is what
    makes a skip certain. Without the cache nothing is certain, so the bound is 0.
    """
    if not use_cache:
        return 0
    return kv_cache_bytes(hf_config, batch_size, input_length + output_length, dtype_bytes)
