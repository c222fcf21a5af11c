"""Clocks and statistics. Knows nothing of models.

GPU work is asynchronous, so a host clock read is only true after the device has caught up:
``sync`` before every clock read around a timed region (a no-op on CPU, so CPU runs never
crash). ``time.perf_counter`` is monotonic and high resolution; ``time.time`` is neither.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence

import torch


def sync(device: torch.device) -> None:
    """Wait for all queued work on ``device``; nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TokenClock:
    """A ``generate(streamer=...)`` callback that timestamps every generated token.

    transformers calls ``put`` once with the prompt, then once per decoding step with that
    step's tokens (for every batch size). On CUDA each ``put`` receives tokens already copied
    to the host, which waits for the step's kernels, so the timestamps are device-true.
    """

    def __init__(self) -> None:
        self.prompt_seen = False
        self.token_times: List[float] = []  # perf_counter() at each new token, in order
        self._reference = None  # (perf_counter, CUDA event) taken together, for mark()
        self._events: List[torch.cuda.Event] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True  # the first call carries the prompt, not a new token
            return
        self.token_times.append(time.perf_counter())

    def end(self) -> None:
        pass

    # A decode loop that never waits for the device cannot use put() (it would need the tokens
    # on the host, a sync per step). It calls start(), mark() after each token's kernels are
    # queued, and resolve() once the device is done: CUDA events record when the device got
    # there, and are turned into perf_counter() times through one reference point.
    def start(self, device: torch.device) -> None:
        self.prompt_seen = True
        if device.type == "cuda":
            sync(device)
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._reference = (time.perf_counter(), event)

    def mark(self) -> None:
        if self._reference is None:  # CPU: kernels run as they are called, the clock is true
            self.token_times.append(time.perf_counter())
            return
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._events.append(event)

    def resolve(self) -> None:
        """After the device is done: the CUDA events become token times."""
        if self._reference is None:
            return
        start_s, start_event = self._reference
        self.token_times.extend(start_s + start_event.elapsed_time(e) / 1e3 for e in self._events)
        self._events.clear()


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


def summarize(samples: Sequence[float]) -> Dict[str, Optional[float]]:
    """mean / median / p90 / std (sample, n-1) / cv of the samples; cv = std / mean."""
    n = len(samples)
    if n == 0:
        raise ValueError("summarize() needs at least one sample")
    mean = sum(samples) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in samples) / (n - 1)) if n > 1 else 0.0
    return {
        "mean": mean,
        "median": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "std": std,
        "cv": std / mean if mean > 0 else None,
    }
