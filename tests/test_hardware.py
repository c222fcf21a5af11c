"""GPU facts and energy per token through a fake NVML; null (never zero) without one."""
import sys
import types

import torch

from llmbench.hardware import EnergyMeter, gpu_facts
from llmbench.sweep import Cell, energy_fields, measure_cell


def fake_nvml(energy_mj):
    """A pynvml stand-in whose energy counter advances by 1000 mJ per read."""
    counter = {"mj": energy_mj}
    mod = types.ModuleType("pynvml")
    mod.NVML_CLOCK_SM, mod.NVML_CLOCK_MEM = 1, 2
    mod.nvmlInit = lambda: None
    mod.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 * 1024 ** 3)
    mod.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    mod.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    mod.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    mod.nvmlDeviceGetClockInfo = lambda h, kind: 1980 if kind == 1 else 2619
    mod.nvmlDeviceGetMaxClockInfo = lambda h, kind: 1980 if kind == 1 else 2619

    def energy(h):
        counter["mj"] += 1000
        return counter["mj"]
    mod.nvmlDeviceGetTotalEnergyConsumption = energy
    return mod


def test_gpu_facts_from_fake_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(0))
    facts = gpu_facts(0)
    assert facts["gpu_name"] == "NVIDIA H100 80GB HBM3" and facts["gpu_memory_total_gib"] == 80
    assert facts["gpu_power_limit_w"] == 700 and facts["gpu_sm_clock_max_mhz"] == 1980
    assert facts["gpu_driver_version"] == "580.159.04" and facts["gpu_energy_counter"] is True


def test_no_nvml_means_null(monkeypatch):
    broken = types.ModuleType("pynvml")

    def fail():
        raise RuntimeError("NVML Shared Library Not Found")
    broken.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert all(v is None for v in gpu_facts(0).values())
    assert EnergyMeter([0]).read_j() is None
    assert energy_fields(None, None, 10) == {"energy_j": None, "joules_per_token": None}


def test_energy_per_token_around_timed_calls(monkeypatch, tiny_cfg):
    from test_measure import FakeBackend

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(5_000_000))
    meter = EnergyMeter([0])
    row = measure_cell(FakeBackend(prefill_s=0, step_s=0), Cell(2, 8, 4), tiny_cfg("num_batches=3"), 100,
                       torch.device("cpu"), energy_meter=meter)
    # One read before and one after the 3 timed calls: +1000 mJ = 1 J over 3 x 2 x 4 = 24 tokens.
    assert row["energy_j"] == 1.0 and row["joules_per_token"] == 1.0 / 24
