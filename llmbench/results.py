"""Result files: one self-describing JSON row per cell, appended the moment it is measured.

``<results_dir>/<benchmark_name>.jsonl`` is the source of truth. Each row is written with a
single ``write`` of one complete line to a file opened with O_APPEND, then fsynced, so a crash
or ``kill -9`` at any moment leaves only whole rows. The CSV beside it is derived from the
JSONL. The resolved config is saved beside them, named by its hash, which every row carries.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import uuid
from typing import Any, Dict, Iterable, List

import yaml

from llmbench.config import BenchmarkConfig, config_hash, config_to_dict

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def results_path(cfg: BenchmarkConfig, suffix: str = "jsonl") -> str:
    return os.path.join(cfg.results_dir, f"{cfg.benchmark_name}.{suffix}")


class ResultsFileError(ValueError):
    """A results file that cannot be read as JSON rows (a user-visible, one-line problem)."""


class ResultsWriter:
    """Appends rows to a JSONL file, one durable line per row."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        drop_torn_tail(path)

    def write(self, row: Dict[str, Any]) -> None:
        line = (json.dumps(row, allow_nan=False, default=str) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)  # one write: readers never see half a row
            assert written == len(line), "short write to results file"
            os.fsync(fd)
        finally:
            os.close(fd)


def drop_torn_tail(path: str) -> None:
    """Cut an incomplete last line (a crash mid-write on a filesystem without atomic appends),
    so that the next row starts on a line of its own instead of gluing onto the fragment."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)  # 0 when the only line is torn
        f.flush()
        os.fsync(f.fileno())


def load_rows(path: str) -> List[Dict[str, Any]]:
    """Read a JSONL results file. A torn last line (a crash mid-write on a filesystem without
    atomic appends) is skipped; a malformed line elsewhere is an error."""
    rows = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ResultsFileError(f"{path}:{i + 1}: not a JSON row")
    return rows


def write_csv(rows: Iterable[Dict[str, Any]], path: str) -> None:
    """All rows as CSV; lists (the kept samples) become JSON strings in one cell."""
    rows = list(rows)
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    os.replace(tmp, path)  # never leave a half-written CSV behind


def save_resolved_config(cfg: BenchmarkConfig) -> str:
    """Write the resolved config beside the results; rows refer to it by ``config_hash``."""
    path = os.path.join(cfg.results_dir, f"{cfg.benchmark_name}.config-{config_hash(cfg)}.yaml")
    os.makedirs(cfg.results_dir, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    return path


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5)
        commit = out.stdout.strip() if out.returncode == 0 else None
        if commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def run_metadata(cfg: BenchmarkConfig, device, model_info, backend_name: str) -> Dict[str, Any]:
    """The fields every row of this run repeats, so that any single row is self-describing."""
    import torch

    return {
        "run_id": dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6],
        "benchmark_name": cfg.benchmark_name,
        "model_name": model_info.model_name,
        "num_params": model_info.num_params,
        "param_bytes": model_info.param_bytes,
        "backend": backend_name,
        "dtype": cfg.model_dtype,
        "autocast_dtype": cfg.autocast_dtype,
        "device": device.type,
        "device_name": device_name(device),
        "device_count": torch.cuda.device_count() if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "use_cache": cfg.use_cache,
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "transformers_version": _version("transformers"),
        "deepspeed_version": _version("deepspeed"),
    }


def timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
