"""Simulator throughput: batched against one-at-a-time calls, and against the raw torch kernels they are built on.

For every simulated system of the default lab, with the given presets, in one process, each system in a lab
of its own (its instruments and their worlds):

- samples per second of ``system.forward`` with a full batch (``min(max_batch, --batch)`` rows), and one row
  per call; their ratio is what batching buys (goal: ≥ 20×);
- for the optical system, the ratio of its batched throughput to that of the raw ``torch.fft.fft2`` of the
  same batch of padded fields (batch × fft_size²), and to that of the two complex matmuls of the pruned lens
  that the simulator computes instead (A·E·Bᵀ over the camera window it reads; on ``ideal`` only over the SLM
  rows that change from frame to frame, the others once a batch); for the crossbar, to that of
  the raw matmul of the same shapes (batch × rows @ rows × cols), to that of the matmul of the column pairs'
  differences alone (batch × rows @ rows × n_out), which is what a read through exact converters computes, and to
  that of the kernels a noisy read needs at the least (the matmul, the read noise's variance matmul and one
  Gaussian draw per column). Goal: ≥ 0.5.

Every figure is the median of ``--repeats`` timings, the system and its raw kernel timed alternately, so the
ratios are measured under the same load. θ is held fixed (a crossbar is programmed once, before timing). The modelled
device time of one batched call is given with that θ (the read alone) and with a new one (as at every training step:
a crossbar, say, programs its devices anew).

    .venv/bin/python benchmarks/simulators.py [--presets realistic ideal] [--systems optical …] [--repeats 7]
                                              [--threads N] [--crossbar ROWS COLS]

``--crossbar ROWS COLS`` resizes the simulated crossbar tile (default 64 × 64) and uses all of it (n_in = ROWS,
n_out = COLS/2), to see how the read's fixed passes weigh against the matmul as the tile grows.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.arguments import Parser, check_names, check_presets, count, run  # noqa: E402
from benchmarks.labs import alone  # noqa: E402
from hil.config import YamlDocument  # noqa: E402
from hil.errors import ConfigError  # noqa: E402
from hil.lab import Lab, LabConfig  # noqa: E402


def seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def raw_kernels(system, batch: int) -> dict[str, Callable[[], object]]:
    """The torch kernels the system's simulator is built on, at the same sizes (none for the other systems).

    Optical: the FFT of the zero-padded fields, and the pruned lens it is computed as (`hil.physics.optics`):
    the two complex matmuls A·E·Bᵀ of the fields with the DFT rows of the camera window read out. Crossbar: the
    matmul of the tile; that of the column pairs' differences (half as wide); and, separately, the kernels a noisy
    read cannot do without: the matmul, the variance matmul of the read noise and one Gaussian draw per column.
    """
    if system.kind == "optical":
        size = system.fft_size
        padded = torch.randn(batch, size, size, dtype=torch.complex64)
        fields = torch.randn(batch, *system.slm.shape, dtype=torch.complex64)
        _, _, height, width = system.window or (0, 0, *system.camera.shape)
        a = torch.randn(height, system.slm.shape[0], dtype=torch.complex64)
        b = torch.randn(width, system.slm.shape[1], dtype=torch.complex64)
        return {"fft2": lambda: torch.fft.fft2(padded), "lens matmuls": lambda: torch.matmul(a, fields) @ b.T}
    if system.kind == "crossbar":
        rows, cols = system.crossbar.shape
        inputs, weights = torch.randn(batch, rows), torch.randn(rows, cols)
        variance = torch.rand(rows, cols)
        generator = torch.Generator().manual_seed(0)

        def noisy_read() -> object:
            mean = inputs @ weights
            spread = torch.addmm(torch.ones(cols), inputs * inputs, variance).sqrt_()
            return mean.addcmul_(spread, torch.randn(mean.shape, generator=generator))

        pairs = torch.randn(rows, system.n_out)
        return {"matmul": lambda: inputs @ weights, "pair matmul": lambda: inputs @ pairs, "matmul+noise": noisy_read}
    return {}


def device_seconds(system, x: torch.Tensor, theta: torch.Tensor) -> float:
    """The modelled device time (s) of one call ``system.forward(x, θ)``, as the system counts it."""
    started = system.device_time_s
    system.forward(x, theta)
    return system.device_time_s - started


def measure(system, batch: int, repeats: int, singles: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    low, high = system.x_bounds
    x = low + (high - low) * torch.rand(batch, system.n_in, generator=generator)
    low, high = system.theta_bounds
    theta = low + (high - low) * torch.rand(system.n_params, generator=generator)
    rows = [x[k % batch][None] for k in range(singles)]  # the one-row calls' inputs, sliced before timing
    system.calibrate()
    system.forward(x, theta)  # warm-up (and programming)
    system.forward(rows[0], theta)  # a one-row call's first (its shapes' first kernels), untimed as well
    kernels = raw_kernels(system, batch)
    for kernel in kernels.values():
        kernel()
    batched, single = [], []
    raw: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(repeats):
        batched.append(seconds(lambda: system.forward(x, theta)))
        for name, kernel in kernels.items():
            raw[name].append(seconds(kernel))
        single.append(seconds(lambda: [system.forward(row, theta) for row in rows]) / singles)
    figures = {
        "batch": batch,
        "batched_per_s": batch / statistics.median(batched),
        "single_per_s": 1 / statistics.median(single),
        "device_s_per_call": device_seconds(system, x, theta),
        "device_s_per_new_theta_call": device_seconds(system, x, low + (high - low) * torch.rand(
            system.n_params, generator=generator)),
    }
    figures["batching_gain"] = figures["batched_per_s"] / figures["single_per_s"]
    for name, times in raw.items():
        figures[f"of {name}"] = figures["batched_per_s"] / (batch / statistics.median(times))
    return figures


def conditions() -> str:
    """torch's version and threads, the machine's cores, and its load average over the last minute before the run
    (where the system keeps one): another process on the cores moves every figure, the ratios too."""
    load = f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "unknown (no os.getloadavg here)"
    return (f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores, load average "
            f"{load} over the last minute")


def resize_crossbars(config: LabConfig, rows: int, cols: int) -> None:
    """Make every crossbar system of ``config`` a ``rows × cols`` tile, all of it used (n_out = cols/2)."""
    for system in config.systems.values():
        if system.kind == "crossbar":
            world = config.worlds[config.instruments[system.instruments["crossbar"]].world]
            world.config.setdefault("geometry", {}).update(rows=rows, cols=cols)
            system.settings.update(n_in=rows, n_out=cols // 2)


def main() -> None:
    parser = Parser(prog="benchmarks/simulators.py", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["realistic", "ideal"])
    parser.add_argument("--systems", nargs="+", default=None, help="systems of lab.yaml (default: every simulated one)")
    parser.add_argument("--batch", type=count, default=1024, help="largest batch (capped by each system's max_batch)")
    parser.add_argument("--repeats", type=count, default=7)
    parser.add_argument("--singles", type=count, default=20, help="one-row calls per timing")
    parser.add_argument("--threads", type=count, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--crossbar", type=count, nargs=2, metavar=("ROWS", "COLS"), default=None,
                        help="crossbar tile size (default: lab.yaml's)")
    args = parser.parse_args()
    base = YamlDocument.read(ROOT / "lab.yaml").validate(LabConfig)
    simulated = [name for name, system in base.systems.items()
                 if all(base.instruments[i].world for i in system.instruments.values())]
    check_names(parser, "--systems", args.systems or [], simulated, "the simulated systems of lab.yaml")
    check_presets(parser, base, base.worlds, args.presets)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crossbar:
        resize_crossbars(base, *args.crossbar)
    simulated = [name for name in simulated if args.systems is None or name in args.systems]
    print(conditions())
    header = (f"{'system':18s} {'preset':10s} {'batch':>6s} {'batched/s':>11s} {'single/s':>10s} {'gain':>7s} "
              f"{'device s/call':>14s} {'new θ':>10s}   of the raw kernel's throughput")
    print(header)
    for preset in args.presets:
        config = copy.deepcopy(base)
        for world in config.worlds.values():
            world.preset = preset
        for name in simulated:
            try:  # in a lab of its own: another system's world, which may refuse the preset, is not built
                lab = Lab(alone(config, name)).open()
            except ConfigError as refused:  # e.g. a tile too large for the preset's first-order IR drop
                print(f"{name:18s} {preset:10s} refused: {refused}", flush=True)
                continue
            with lab:
                system = lab.systems[name]
                f = measure(system, min(args.batch, system.max_batch), args.repeats, args.singles)
            raw = ", ".join(f"{f[key]:.2f} {key[3:]}" for key in f if key.startswith("of "))
            print(f"{name:18s} {preset:10s} {f['batch']:6d} {f['batched_per_s']:11.0f} {f['single_per_s']:10.1f} "
                  f"{f['batching_gain']:6.0f}× {f['device_s_per_call']:14.4g} {f['device_s_per_new_theta_call']:10.4g}"
                  f"   {raw}", flush=True)


if __name__ == "__main__":
    run(main)
