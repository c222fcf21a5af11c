"""GPU facts and energy through NVML (nvidia-ml-py). On a machine without NVIDIA GPUs every
field is null, never zero: a zero would read as a measurement."""
from __future__ import annotations

from typing import Any, Dict, Optional


def _nvml():
    """The initialised pynvml module, or None where there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def nvml_handle(nvml, torch_index: int):
    """NVML's handle for torch's CUDA device ``torch_index``. NVML numbers all GPUs of the machine
    and ignores CUDA_VISIBLE_DEVICES, so torch's index is matched by the GPU's UUID; the index
    itself is the fallback (no torch CUDA, or an NVML without UUID lookup)."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(torch_index).uuid)
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:
        return _try(nvml.nvmlDeviceGetHandleByIndex, torch_index)


def gpu_facts(index: int = 0) -> Dict[str, Any]:
    """Name, memory, clocks, power limit, driver of GPU ``index``; all null without NVML."""
    facts: Dict[str, Any] = {key: None for key in (
        "gpu_name", "gpu_memory_total_gib", "gpu_sm_clock_mhz", "gpu_sm_clock_max_mhz", "gpu_memory_clock_mhz",
        "gpu_memory_clock_max_mhz", "gpu_power_limit_w", "gpu_driver_version", "gpu_energy_counter")}
    nvml = _nvml()
    if nvml is None:
        return facts
    handle = nvml_handle(nvml, index) if index >= 0 else None
    if handle is None:
        return facts
    memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
    power_mw = _try(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    name = _try(nvml.nvmlDeviceGetName, handle)
    driver = _try(nvml.nvmlSystemGetDriverVersion)
    facts.update(
        gpu_name=_text(name) if name is not None else None,
        gpu_memory_total_gib=memory.total / 1024 ** 3 if memory is not None else None,
        gpu_sm_clock_mhz=_try(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
        gpu_sm_clock_max_mhz=_try(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM),
        gpu_memory_clock_mhz=_try(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM),
        gpu_memory_clock_max_mhz=_try(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_MEM),
        gpu_power_limit_w=power_mw / 1000 if power_mw is not None else None,
        gpu_driver_version=_text(driver) if driver is not None else None,
        gpu_energy_counter=_try(nvml.nvmlDeviceGetTotalEnergyConsumption, handle) is not None,
    )
    return facts


class EnergyMeter:
    """Reads NVML's cumulative energy counter (millijoules since driver load) of the GPUs in use.

    ``read_j`` returns None where the counter does not exist (CPUs, GPUs before Volta), so energy
    fields stay null rather than zero. The counter updates about every few ms to 100 ms: energy
    of very short cells is coarse, which is why it is read around all timed calls of a cell.
    """

    def __init__(self, device_indices=(0,), enabled: bool = True):
        self.handles = []
        nvml = _nvml() if enabled else None
        if nvml is None:
            return
        for index in device_indices:
            handle = nvml_handle(nvml, index)
            if handle is None or _try(nvml.nvmlDeviceGetTotalEnergyConsumption, handle) is None:
                self.handles = []
                return
            self.handles.append(handle)
        self.nvml = nvml

    def read_j(self) -> Optional[float]:
        if not self.handles:
            return None
        return sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1000.0
