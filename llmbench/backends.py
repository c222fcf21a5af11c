"""How ``generate`` is called: the work each timed call does is pinned here.

Every backend generates exactly ``output_length`` new tokens per sequence, greedily, with no
EOS stop (``min_new_tokens == max_new_tokens``, ``eos_token_id=None``), so two runs of the same
cell always do the same work and the token count can be checked from the output tensor.

- ``hf_generate``: eager transformers ``generate`` with its dynamic KV cache.
- ``hf_compiled``: transformers' static KV cache (``cache_implementation="static"``) with the
  decode forward compiled by ``torch.compile`` through generate's own ``compile_config``
  (``mode="reduce-overhead"``, i.e. CUDA graphs, on GPU). Compilation happens on the first
  call of each new shape and is kept out of the samples by the warm-up (sweep.py). MPT gets
  an output-identical attention forward without the per-layer graph break (patches.py).

- ``static_loop``: no ``generate`` at all: the model's own forward with a static KV cache in a
  minimal greedy loop (gpt-fast's shape): prefill eager, each decode step one compiled call
  (a CUDA graph on GPU) that also picks the token, no host sync between steps, per-token times
  from CUDA events. It shows what the same transformers model does without generate's per-step
  Python and syncs, i.e. how much of the gap to the bandwidth limit is the generate loop.

Any backend other than eager ``hf_generate`` is checked before timing: its greedy tokens on
the first cell's inputs must equal eager generate's (``outputs_match`` in every row).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from llmbench.config import BenchmarkConfig
from llmbench.models import TORCH_DTYPES


class HFGenerateBackend:
    """Eager Hugging Face ``generate``."""

    name = "hf_generate"

    def __init__(self, model: torch.nn.Module, cfg: BenchmarkConfig, device: torch.device):
        self.model = model
        self.cfg = cfg
        self.device = device

    def generation_kwargs(self, output_length: int) -> dict:
        """The keyword arguments of every ``generate`` call (tests assert on them)."""
        return dict(
            max_new_tokens=output_length,
            min_new_tokens=output_length,
            do_sample=False,
            num_beams=1,
            eos_token_id=None,  # no early stop: every sequence produces output_length tokens
            pad_token_id=0,
            use_cache=self.cfg.use_cache,  # explicit: MPT's config defaults it to False
        )

    @torch.inference_mode()
    def generate_with_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_length: int):
        """The correctness gate's reference: the same greedy call, also returning the logits each
        step chose from (a tuple of ``output_length`` tensors of shape (batch, vocab))."""
        with self.autocast():
            out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, output_logits=True,
                                      return_dict_in_generate=True, **self.generation_kwargs(output_length))
        return out.sequences, out.logits

    def prepare(self) -> None:
        """Changes to the model this backend needs; undone by ``close``."""

    def compile_stats(self) -> dict:
        """Row fields on what torch.compile did; null for a backend that compiles nothing."""
        return {"compiled_graphs": None, "graph_breaks": None, "cudagraph_skips": None, "compile_tuning": None}

    def close(self) -> None:
        pass

    def autocast(self):
        if self.cfg.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=TORCH_DTYPES[self.cfg.autocast_dtype])

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_length: int,
                 streamer: Optional[object] = None) -> torch.Tensor:
        """Generate ``output_length`` tokens for each row; returns prompt + new tokens."""
        with self.autocast():
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, streamer=streamer,
                                       **self.generation_kwargs(output_length))


class _CompiledBackend(HFGenerateBackend):
    """What both compiled backends share: dynamo's recompile limits raised, MPT's attention
    without the graph break while the backend is in use, and the compile mode."""

    def __init__(self, model: torch.nn.Module, cfg: BenchmarkConfig, device: torch.device):
        super().__init__(model, cfg, device)
        # Every (batch, cache length) is a new graph; the default limit of 8 would make later
        # cells silently fall back to eager, which would then be reported as compiled.
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
        torch._dynamo.config.accumulated_cache_size_limit = max(
            torch._dynamo.config.accumulated_cache_size_limit, 2048)
        self.tuning = device.type == "cuda" and cfg.compile_tuning
        self._tuning_before = None
        self._counters_at_start = self._compile_counters()

    @staticmethod
    def _compile_counters() -> tuple:
        from torch._dynamo.utils import counters

        return (counters["stats"]["unique_graphs"], sum(counters["graph_break"].values()),
                counters["inductor"]["cudagraph_skips"])

    def compile_stats(self) -> dict:
        """What compiling did since this backend was built, over its whole sweep so far: graphs
        compiled (one per new shape is the clean case), graph breaks, and calls that ran without
        their CUDA graph. Breaks or skips mean a decode step is not one CUDA graph, which its
        speed should be read with. Counted by dynamo/inductor process-wide: backends run one
        after another, so only this backend's own compiles fall in the window."""
        graphs, breaks, skips = (now - then for now, then in zip(self._compile_counters(),
                                                                   self._counters_at_start))
        return {"compiled_graphs": graphs, "graph_breaks": breaks,
                "cudagraph_skips": skips if self.device.type == "cuda" else None, "compile_tuning": self.tuning}

    @property
    def compile_mode(self) -> str:
        # CUDA graphs ("reduce-overhead") remove the per-kernel launch cost that dominates
        # small-batch decode; on CPU they do not exist, so use inductor's default mode.
        return "reduce-overhead" if self.device.type == "cuda" else "default"

    def prepare(self) -> None:
        from llmbench.patches import patch_mpt_attention

        patch_mpt_attention(self.model)
        if self.tuning:
            import torch._inductor.config as inductor_config

            # gpt-fast's setting: tunes the block sizes of inductor's generated kernels (the
            # fused norms, activations and reductions around the matmuls) for each new shape.
            # Compiles happen while the backend is prepared; close() puts the setting back.
            self._tuning_before = inductor_config.coordinate_descent_tuning
            inductor_config.coordinate_descent_tuning = True

    def close(self) -> None:
        from llmbench.patches import unpatch_mpt_attention

        unpatch_mpt_attention(self.model)  # eager generate runs transformers' own code again
        if self._tuning_before is not None:
            import torch._inductor.config as inductor_config

            inductor_config.coordinate_descent_tuning = self._tuning_before
            self._tuning_before = None


class HFCompiledBackend(_CompiledBackend):
    """Static KV cache + ``torch.compile`` of the decode step, through transformers' generate."""

    name = "hf_compiled"

    def generation_kwargs(self, output_length: int) -> dict:
        from transformers import CompileConfig

        compile_config = CompileConfig(fullgraph=False, dynamic=False, mode=self.compile_mode)
        if self.device.type != "cuda":
            # transformers only auto-compiles on accelerators unless told otherwise.
            compile_config._compile_all_devices = True
        kwargs = super().generation_kwargs(output_length)
        kwargs.update(cache_implementation="static", compile_config=compile_config)
        return kwargs


class StaticLoopBackend(_CompiledBackend):
    """A minimal greedy decode loop over the model's forward: static cache, compiled step."""

    name = "static_loop"

    def prepare(self) -> None:
        super().prepare()
        self.caches = {}  # (batch, length) -> StaticCache: the same tensors every call (CUDA graphs)
        self.step = torch.compile(self._decode_step, mode=self.compile_mode, fullgraph=False, dynamic=False)

    def close(self) -> None:
        super().close()
        self.caches.clear()

    def _decode_step(self, tokens: torch.Tensor, cache) -> torch.Tensor:
        logits = self.model(input_ids=tokens, cache=cache, use_cache=True).logits
        return logits[:, -1].argmax(dim=-1, keepdim=True)  # greedy, as generate(do_sample=False)

    def cache_for(self, batch_size: int, max_len: int):
        from transformers import StaticCache

        key = (batch_size, max_len)
        if key not in self.caches:
            self.caches[key] = StaticCache(config=self.model.config, max_cache_len=max_len)
        cache = self.caches[key]
        cache.reset()  # zeroes K/V and the write position in place: same addresses every call
        return cache

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_length: int,
                 streamer: Optional[object] = None) -> torch.Tensor:
        from llmbench.timing import TokenClock, sync

        clock = streamer if isinstance(streamer, TokenClock) else None
        if clock is not None:
            clock.start(self.device)
        batch_size, input_length = input_ids.shape
        cache = self.cache_for(batch_size, input_length + output_length)
        new_tokens = torch.empty(batch_size, output_length, dtype=input_ids.dtype, device=input_ids.device)
        with self.autocast():
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                use_cache=True, logits_to_keep=1).logits
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            new_tokens[:, :1] = token
            if clock is not None:
                clock.mark()
            for i in range(1, output_length):
                if self.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()  # the last step's output is consumed
                # clone (gpt-fast's order): the CUDA graph reuses its output buffer on the next replay
                token = self.step(token, cache).clone()
                new_tokens[:, i:i + 1] = token
                if clock is not None:
                    clock.mark()
        if clock is not None:
            sync(self.device)
            clock.resolve()
        return torch.cat([input_ids, new_tokens], dim=1)


BACKEND_CLASSES = {cls.name: cls for cls in (HFGenerateBackend, HFCompiledBackend, StaticLoopBackend)}


def build_backend(name: str, model: torch.nn.Module, cfg: BenchmarkConfig, device: torch.device):
    backend = BACKEND_CLASSES[name](model, cfg, device)
    backend.prepare()
    return backend


MAX_GATE_LOGITS_BYTES = 1 << 30  # the gate keeps eager's fp32 logits of every step up to this size
NO_MISMATCH = {"first_mismatch_token": None, "mismatch_eager_rank": None, "mismatch_logit_gap": None}


def compare_with_eager(backend, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       output_length: int) -> dict:
    """Greedy tokens of ``backend`` vs eager ``hf_generate`` on the same inputs (the correctness
    gate). Runs the eager reference with the backend's changes undone. Returns row fields."""
    import time

    from llmbench.timing import sync

    backend.close()
    reference = HFGenerateBackend(backend.model, backend.cfg, backend.device)
    batch, length = input_ids.shape
    if batch * output_length * backend.model.config.vocab_size * 4 <= MAX_GATE_LOGITS_BYTES:
        expected, eager_logits = reference.generate_with_logits(input_ids, attention_mask, output_length)
    else:  # too large a first cell to keep every step's fp32 logits: tokens only, no rank/gap
        expected, eager_logits = reference.generate(input_ids, attention_mask, output_length), None
    backend.prepare()
    sync(backend.device)
    start = time.perf_counter()
    actual = backend.generate(input_ids, attention_mask, output_length)  # also compiles this shape
    sync(backend.device)
    first_call_s = time.perf_counter() - start
    outputs_match = bool(torch.equal(expected, actual))
    where = (describe_mismatch(expected, actual, eager_logits, length)
             if not outputs_match and expected.shape == actual.shape else NO_MISMATCH)
    return {
        "outputs_match": outputs_match,
        **where,
        "outputs_compared": f"greedy tokens vs eager hf_generate, batch {batch}, input {length}, "
                            f"output {output_length}, {backend.cfg.model_dtype}",
        "gate_first_call_s": first_call_s,
    }


def describe_mismatch(expected: torch.Tensor, actual: torch.Tensor, eager_logits, input_length: int) -> dict:
    """Where and how greedy tokens part. A backend that computes the same function in another
    rounding order parts at a near-tie: late, picking eager's second choice by a tiny logit gap.
    A wrong computation parts early, picking a token eager ranks far down.

    ``first_mismatch_token``: index of the first new token that differs in any row.
    ``mismatch_eager_rank``: the backend's token's rank in the logits eager chose from at that
    step (2 = eager's runner-up). ``mismatch_logit_gap``: eager's top logit minus the backend
    token's logit. Both read eager generate's own logits (``eager_logits``: one (batch, vocab)
    tensor per new token), not a recomputation that could round differently."""
    differs = expected[:, input_length:] != actual[:, input_length:]
    if not differs.any():  # only the prompt part differs: no new token to describe
        return NO_MISMATCH
    step = int(differs.any(dim=0).nonzero()[0])
    row = int(differs[:, step].nonzero()[0])
    chosen = int(actual[row, input_length + step])
    if eager_logits is None or not 0 <= chosen < eager_logits[step].shape[-1]:  # no logits kept / not a token
        return {**NO_MISMATCH, "first_mismatch_token": step}
    logits = eager_logits[step][row].float()
    return {
        "first_mismatch_token": step,
        "mismatch_eager_rank": int((logits > logits[chosen]).sum()) + 1,
        "mismatch_logit_gap": float(logits.max() - logits[chosen]),
    }
