"""DeepSpeed inference: the launcher's environment, ``deepspeed.init_inference``, and the checks after it.

    deepspeed --num_gpus 2 benchmark.py yamls/tiny_tp.yaml         # DeepSpeed's launcher (CPU or GPU)
    torchrun --nproc_per_node 2 benchmark.py yamls/tiny_tp.yaml     # torchrun: LOCAL_SIZE is exported here
    deepspeed --num_gpus 8 benchmark.py yamls/30b_tp.yaml          # MPT-30B over 8 GPUs

Every rank builds the same full model from the same seed (so every rank slices its shard from
identical weights) and draws the same inputs (``sweep.make_inputs`` is seeded by the cell only).
With ``tp_size > 1`` the model is built in host memory and DeepSpeed's AutoTP moves only this
rank's shard to its device. After wrapping we check what DeepSpeed does not: that the parameters
are in the requested dtype, that the layers really are sharded, and that the wrapped model's
greedy output matches the plain Hugging Face model's on a fixed prompt (the correctness gate).
Only rank 0 prints and writes results (``run.py``); every rank runs every timed call, since each
forward needs all ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from llmbench.config import BenchmarkConfig, ConfigError

# The correctness gate's prompt: 2 rows of GATE_PROMPT_LENGTH ids, the second left-padded by
# GATE_PADDING positions (padded batches are where injected kernels have produced garbage).
GATE_PROMPT_LENGTH = 12
GATE_PADDING = 4
GATE_NEW_TOKENS = 16
# Fused kernels, and reduced precision under tensor parallelism, are not bit-exact (bf16 sharded
# tokens drift from the unsharded model's after ~9 steps with random weights), so there the
# gate compares the last-position logits with this tolerance, relative to the largest logit.
# Elsewhere (fp32, or nothing sharded or fused) greedy tokens must be identical.
GATE_LOGITS_RTOL = {"fp32": 1e-3, "fp16": 0.02, "bf16": 0.05}


class DeepSpeedCheckError(RuntimeError):
    """The wrapped model is not what was asked for (wrong dtype, not sharded)."""


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in the launched job (all 0/1 without a launcher)."""
    rank: int
    local_rank: int
    world_size: int
    local_size: int  # processes on this node


def read_launch_env(environ: Optional[Dict[str, str]] = None) -> LaunchEnv:
    """Rank and sizes from the variables set by ``deepspeed`` (LOCAL_SIZE) or ``torchrun`` (LOCAL_WORLD_SIZE)."""
    env = os.environ if environ is None else environ
    world_size = int(env.get("WORLD_SIZE", 1))
    local_size = int(env.get("LOCAL_SIZE") or env.get("LOCAL_WORLD_SIZE") or world_size)
    return LaunchEnv(rank=int(env.get("RANK", 0)), local_rank=int(env.get("LOCAL_RANK", 0)),
                     world_size=world_size, local_size=local_size)


def export_local_size(env: LaunchEnv) -> None:
    """DeepSpeed's CPU shared-memory all-reduce reads LOCAL_SIZE, which only its own launcher sets;
    under torchrun it is missing and the all-reduce segfaults. Export it from LOCAL_WORLD_SIZE."""
    os.environ.setdefault("LOCAL_SIZE", str(env.local_size))


@dataclass(frozen=True)
class DeepSpeedPlan:
    """The resolved ``deepspeed:`` block for this machine and launch."""
    tp_size: int
    kernel_inject: bool
    enable_cuda_graph: bool
    device_type: str  # cpu | cuda


def attention_head_counts(cfg: BenchmarkConfig) -> Dict[str, int]:
    """The head counts tensor parallelism must divide: attention heads, and key/value heads if grouped."""
    if cfg.model.name == "mpt_causal_lm":
        return {"model.n_heads": cfg.model.n_heads}
    from llmbench.models import build_hf_config

    hf_config = build_hf_config(cfg.model, cfg.max_seq_len)
    counts = {}
    for attr in ("num_attention_heads", "num_key_value_heads"):
        value = getattr(hf_config, attr, None)
        if isinstance(value, int) and value > 0:
            counts[f"{attr} of {cfg.model.pretrained_model_name_or_path}"] = value
    return counts


# Kernel injection with DeepSpeed <= this version under transformers >= 5 fails in the first
# forward: its injected layers take transformers 4's layer call (on an H100, Llama, DeepSpeed
# 0.19.8, transformers 5.24.0: "AttributeError: 'tuple' object has no attribute 'size'" in
# deepspeed/model_implementations/transformers/ds_transformer.py). Newer DeepSpeed is let through.
KERNEL_INJECT_LAST_BROKEN_DEEPSPEED = "0.19.8"


def kernel_injection_blocker() -> Optional[str]:
    """Why DeepSpeed's kernel injection cannot run with the installed versions, or None."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        deepspeed_version, transformers_version = version("deepspeed"), version("transformers")
    except PackageNotFoundError:
        return None
    if Version(transformers_version).major >= 5 and Version(deepspeed_version) <= Version(
            KERNEL_INJECT_LAST_BROKEN_DEEPSPEED):
        return (f"DeepSpeed {deepspeed_version}'s injected layers take transformers 4's layer calls and fail in "
                f"the first forward under transformers {transformers_version}")
    return None


def check_deepspeed(cfg: BenchmarkConfig, env: Optional[LaunchEnv] = None) -> DeepSpeedPlan:
    """Resolve the defaults of ``deepspeed:`` and reject what cannot run here, before any model is built."""
    from llmbench.models import resolve_device

    env = env or read_launch_env()
    ds = cfg.deepspeed
    device_type = resolve_device(cfg).type
    tp_size = ds.tp_size if ds.tp_size is not None else env.world_size
    if tp_size != env.world_size:
        # DeepSpeed's inference engine builds a single tensor-parallel group of ranks 0..tp_size-1.
        raise ConfigError(f"deepspeed.tp_size={tp_size} is invalid: it must equal the launcher's world size "
                          f"({env.world_size}); launch with `deepspeed --num_gpus {tp_size}` or "
                          f"`torchrun --nproc_per_node {tp_size}`, or set deepspeed.tp_size={env.world_size}")
    for key, heads in attention_head_counts(cfg).items():
        if heads % tp_size:
            raise ConfigError(f"deepspeed.tp_size={tp_size} is invalid: it must divide {key}={heads}; "
                              "pick a tp_size that divides the heads")
    kernel_inject = ds.replace_with_kernel_inject
    blocker = kernel_injection_blocker()
    if kernel_inject is None:
        # The fused kernels exist only on CUDA, and DeepSpeed has no injection policy for MPT.
        kernel_inject = device_type == "cuda" and cfg.model.name != "mpt_causal_lm" and blocker is None
    if kernel_inject and cfg.model.name == "mpt_causal_lm":
        raise ConfigError("deepspeed.replace_with_kernel_inject=True is invalid: DeepSpeed has no kernel-injection "
                          "policy for MPT (nothing would be replaced, and with tp_size > 1 nothing sharded); "
                          "set it to false (or null)")
    if device_type != "cuda" and kernel_inject:
        raise ConfigError("deepspeed.replace_with_kernel_inject=True is invalid: DeepSpeed's injected kernels are "
                          "CUDA-only and this run is on the CPU; set it to false (or null)")
    if kernel_inject and blocker:
        raise ConfigError(f"deepspeed.replace_with_kernel_inject=True is invalid: {blocker}; set it to false "
                          "(or null): AutoTP still shards the model across the GPUs")
    return DeepSpeedPlan(tp_size=tp_size, kernel_inject=kernel_inject, enable_cuda_graph=ds.enable_cuda_graph,
                         device_type=device_type)


def make_gate_inputs(seed: int, vocab_size: int, device: torch.device):
    """The gate's fixed prompt: 2 rows, the second left-padded with id 0 and a zero attention mask."""
    generator = torch.Generator().manual_seed(seed + 7919)
    input_ids = torch.randint(1, vocab_size, (2, GATE_PROMPT_LENGTH), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, :GATE_PADDING] = 0
    attention_mask[1, :GATE_PADDING] = 0
    return input_ids.to(device), attention_mask.to(device)


@torch.inference_mode()
def greedy_outputs(model, cfg: BenchmarkConfig, device: torch.device) -> Dict[str, torch.Tensor]:
    """Greedy tokens (through the same generate call the sweep times) and last-position logits."""
    from llmbench.backends import HFGenerateBackend

    module = getattr(model, "module", model)  # DeepSpeed's engine wraps the HF model
    input_ids, attention_mask = make_gate_inputs(cfg.seed, module.config.vocab_size, device)
    new_tokens = max(1, min(GATE_NEW_TOKENS, cfg.max_seq_len - GATE_PROMPT_LENGTH))
    output = HFGenerateBackend(model, cfg, device).generate(input_ids, attention_mask, new_tokens)
    logits = module(input_ids=input_ids, attention_mask=attention_mask).logits[:, -1].float()
    return {"tokens": output[:, GATE_PROMPT_LENGTH:].cpu(), "logits": logits.cpu()}


def compare_outputs(reference: Dict[str, torch.Tensor], wrapped: Dict[str, torch.Tensor], dtype: str,
                    exact: bool):
    """-> (outputs_match, outputs_compared). ``exact``: greedy tokens must be identical; otherwise
    the last-position logits must agree within GATE_LOGITS_RTOL."""
    ref_tokens, tokens = reference["tokens"], wrapped["tokens"]
    equal_tokens = int((ref_tokens == tokens).all(dim=1).sum()) if ref_tokens.shape == tokens.shape else 0
    rows, new = ref_tokens.shape
    what = f"greedy tokens of {rows} prompts x {new} new (1 left-padded), {dtype}, vs the plain HF model"
    if exact:
        return equal_tokens == rows, f"{what}: exact; {equal_tokens}/{rows} rows identical"
    scale = float(reference["logits"].abs().max().clamp_min(1e-6))
    diff = float((reference["logits"] - wrapped["logits"]).abs().max()) / scale
    rtol = GATE_LOGITS_RTOL[dtype]
    return diff <= rtol, (f"last-position logits, {dtype}, vs the plain HF model: max |diff| = {diff:.3g} x max |logit|"
                          f" (allowed {rtol}: not bit-exact sharded or fused); "
                          f"{equal_tokens}/{rows} token rows identical")


def count_modules(module: torch.nn.Module, package: str) -> int:
    return sum(type(m).__module__.startswith(package) for m in module.modules())


def arch_list_for_deepspeed(arch_list: str) -> str:
    """TORCH_CUDA_ARCH_LIST as DeepSpeed's JIT op builder can parse it.

    DeepSpeed 0.19.8 (op_builder/builder.py, compute_capability_args) sorts the entries with
    ``int()`` on each part, so an arch-specific entry such as ``9.0a`` (Hopper images set it)
    raises ``ValueError: invalid literal for int() with base 10: '0a'`` when the fused inference
    kernels are built. The family arch (``9.0``) builds the same kernels for them.
    """
    entries = [e for e in arch_list.replace(" ", ";").split(";") if e]
    fixed = []
    for entry in entries:
        number, plus, ptx = entry.partition("+")
        number = number.rstrip("abf")  # 9.0a -> 9.0, 10.0f -> 10.0
        if number + plus + ptx not in fixed:
            fixed.append(number + plus + ptx)
    return ";".join(fixed)


class DeepSpeedRun:
    """One process's part of a DeepSpeed run: its device, the wrapping, and the fields its rows carry."""

    def __init__(self, cfg: BenchmarkConfig, device: torch.device):
        self.cfg = cfg
        self.env = read_launch_env()
        export_local_size(self.env)
        self.plan = check_deepspeed(cfg, self.env)
        if device.type == "cuda":
            device = torch.device("cuda", self.env.local_rank)  # one GPU per rank on the node
            torch.cuda.set_device(device)
        elif self.env.local_size > 1 and "OMP_NUM_THREADS" not in os.environ:
            # Each rank would otherwise start one thread per core: 9x slower from oversubscription.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.env.local_size))
        self.device = device
        self.outputs_match: Optional[bool] = None
        self.outputs_compared = "not checked (deepspeed.check_outputs: false)"
        self.kernel_inject = False
        self.num_params_per_rank: Optional[int] = None

    @property
    def is_main(self) -> bool:
        """Rank 0 prints the table and writes the results."""
        return self.env.rank == 0

    @property
    def build_device(self) -> torch.device:
        """Where build_model puts the full model. Sharded: host memory (each rank holds a full copy
        there until AutoTP has moved its shard to the device; 30B bf16 x 8 ranks = 8 x 60 GB of RAM)."""
        return torch.device("cpu") if self.plan.tp_size > 1 else self.device

    def wrap(self, model: torch.nn.Module):
        """``deepspeed.init_inference`` the model, check dtype and sharding, and run the correctness gate."""
        import deepspeed

        from llmbench.models import TORCH_DTYPES

        dtype = TORCH_DTYPES[self.cfg.model_dtype]
        if self.plan.kernel_inject and os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list_for_deepspeed(os.environ["TORCH_CUDA_ARCH_LIST"])
        reference = self._reference_outputs(model) if self.cfg.deepspeed.check_outputs else None
        full_params = sum(p.numel() for p in model.parameters())
        # AutoTP replaces the Linear layers in place, so the reference above had to come first.
        engine = deepspeed.init_inference(
            model, dtype=dtype, replace_with_kernel_inject=self.plan.kernel_inject,
            tensor_parallel={"tp_size": self.plan.tp_size}, enable_cuda_graph=self.plan.enable_cuda_graph)
        module = engine.module
        self.check_dtype(module, dtype)
        self.num_params_per_rank = sum(p.numel() for p in module.parameters())
        injected = count_modules(module, "deepspeed.model_implementations") + count_modules(module, "deepspeed.ops")
        self.kernel_inject = self.plan.kernel_inject and injected > 0
        if self.plan.tp_size > 1:
            self.check_sharded(module, full_params)
        if reference is not None:
            wrapped = greedy_outputs(engine, self.cfg, self.device)
            exact = not self.kernel_inject and (self.cfg.model_dtype == "fp32" or self.plan.tp_size == 1)
            self.outputs_match, self.outputs_compared = compare_outputs(reference, wrapped, self.cfg.model_dtype,
                                                                        exact)
        return engine

    def _reference_outputs(self, model: torch.nn.Module) -> Dict[str, torch.Tensor]:
        """The plain HF model's gate outputs, on this rank's device (moved there and back if built on host)."""
        built_on = next(model.parameters()).device
        if built_on != self.device:
            model.to(self.device)  # the full model must fit one device for this (30B bf16 does on 80 GB)
        try:
            return greedy_outputs(model, self.cfg, self.device)
        finally:
            if built_on != self.device:
                model.to(built_on)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

    @staticmethod
    def check_dtype(module: torch.nn.Module, dtype: torch.dtype) -> None:
        """Every floating-point parameter is in the requested dtype (DeepSpeed may silently keep others)."""
        wrong = {str(p.dtype) for p in module.parameters() if p.is_floating_point() and p.dtype != dtype}
        if wrong:
            raise DeepSpeedCheckError(f"after deepspeed.init_inference some parameters are {sorted(wrong)}, "
                                      f"not the requested {dtype}")

    def check_sharded(self, module: torch.nn.Module, full_params: int) -> None:
        """With tp_size > 1 this rank must hold fewer parameters than the full model, in DeepSpeed's TP layers."""
        tp_layers = count_modules(module, "deepspeed.module_inject") + count_modules(
            module, "deepspeed.model_implementations")
        if tp_layers == 0 or self.num_params_per_rank >= full_params:
            raise DeepSpeedCheckError(
                f"tp_size={self.plan.tp_size} but the model is not sharded: rank {self.env.rank} holds "
                f"{self.num_params_per_rank:,} of {full_params:,} parameters in {tp_layers} tensor-parallel layers")

    def row_fields(self) -> Dict[str, Any]:
        """What every result row of this run says about DeepSpeed."""
        return {
            "backend": "deepspeed",
            "tp_size": self.plan.tp_size,
            "world_size": self.env.world_size,
            "kernel_inject": self.kernel_inject,
            "enable_cuda_graph": self.plan.enable_cuda_graph,
            "num_params_per_rank": self.num_params_per_rank,
            "outputs_match": self.outputs_match,
            "outputs_compared": self.outputs_compared,
        }
