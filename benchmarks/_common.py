"""Shared bits of the benchmarks: import path, device/thread set-up, GPU utilisation."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` without an installed package
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def setup_device(name: str, threads: int) -> torch.device:
    torch.set_num_threads(threads)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_line(device: torch.device) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    return (f"machine: {what}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"load average {load} (other processes share the cores: timings move with it)")


def _gpu_utilization(device: torch.device) -> float | None:
    try:
        return float(torch.cuda.utilization(device))  # needs pynvml / amdsmi
    except Exception:
        pass
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                              f"--id={index}"], capture_output=True, text=True, timeout=5)
        return float(out.stdout.strip().splitlines()[0])
    except Exception:
        return None


class GpuSampler:
    """Mean GPU utilisation (%) over a `with` block, sampled in a thread; None on CPU."""

    def __init__(self, device: torch.device, every: float = 0.2):
        self.device, self.every = device, every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuSampler":
        if self.device.type == "cuda" and _gpu_utilization(self.device) is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            value = _gpu_utilization(self.device)
            if value is not None:
                self.samples.append(value)
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None

    def text(self) -> str:
        if self.device.type != "cuda":
            return ""
        return f", GPU util {self.mean:.0f}%" if self.mean is not None else ", GPU util n/a"
