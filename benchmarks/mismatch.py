"""How much does the twin's mismatch with the device cost each training method? And what does the framework cost?

For each of the optical, crossbar and oscillator systems, with the ``realistic`` and ``harsh`` presets, over
several seeds (each seed is a different simulated device and a different initialisation), this trains the same
architecture four ways and reports test accuracy on the device:

- ``insilico``: trained through the fitted physics twin alone, then run on the device;
- ``pat``: physics-aware training with the fitted twin;
- ``pat_oracle``: physics-aware training with the oracle twin (the simulator's own noiseless physics with its
  hidden parameters): the ceiling no fitted twin can beat;
- ``ideal``: the same architecture trained (PAT, oracle twin) and tested on the ``ideal`` preset.

Each run is a full protocol run through the orchestrator (collect, fit, train, evaluate), from the protocols in
experiments/, with their training epochs unless ``--epochs`` overrides them (for every variant alike). Then it
measures PAT's framework overhead per training step: the orchestrator's training loop against a minimal
hand-written PAT loop over the same system and twin, in the same process, alternating, as a ratio of median
times.

    .venv/bin/python benchmarks/mismatch.py [--seeds 3] [--systems optical crossbar oscillator]
                                            [--presets realistic harsh] [--epochs N] [--overhead-only]
                                            [--overhead-repeats 5]
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.arguments import Parser, check_names, check_presets, count, run, writable_file  # noqa: E402
from benchmarks.labs import alone, worlds_of  # noqa: E402
from hil.config import YamlDocument  # noqa: E402
from hil.lab import Lab, LabConfig  # noqa: E402
from hil.nn import held_twin, physical_layers  # noqa: E402
from hil.orchestrator import Run  # noqa: E402
from hil.protocol import Protocol  # noqa: E402
from hil.store import RunStore, atomic_write  # noqa: E402

PROTOCOLS = {
    "optical": "experiments/optical_pat_digits.yaml",
    "crossbar": "experiments/crossbar_pat_digits.yaml",
    "oscillator": "experiments/oscillator_pat_vowels.yaml",
}
VARIANTS = ("insilico", "pat", "pat_oracle", "ideal")


def lab_for(protocol: Protocol, preset: str, seed: int) -> Lab:
    """The part of the protocol's lab file that its system needs (`alone`: no other instrument is connected, nor
    world built), every world of it at ``preset`` and ``seed``."""
    config = alone(YamlDocument.read(ROOT / protocol.lab).validate(LabConfig), protocol.system)
    for world in config.worlds.values():
        world.preset = preset
        world.seed = 1000 + seed
    return Lab(config)


def variant_protocol(base: Protocol, variant: str, seed: int, epochs: int | None) -> Protocol:
    protocol = base.model_copy(deep=True)
    protocol.seed = seed
    protocol.method.name = "insilico" if variant == "insilico" else "pat"
    protocol.twin.kind = "oracle" if variant in ("pat_oracle", "ideal") else "physics"
    protocol.evaluation.every_epoch = False
    if epochs is not None:
        protocol.training.epochs = epochs
    return protocol


def run_once(protocol: Protocol, lab: Lab, root: Path) -> dict[str, float]:
    store = RunStore.create(root, protocol.name)
    started = time.perf_counter()
    with lab:
        run = Run(protocol, lab, store, show_progress=False)
        run.prepare()
        run.completed = ["report"]  # no plots needed here
        lab.safe_state()
        run.execute()
    store.close()
    events = store.events()
    evaluated = next(e for e in events if e["kind"] == "evaluated")
    fidelity = next((e for e in events if e["kind"] == "fidelity"), {})
    return {"device_accuracy": evaluated["device_accuracy"], "twin_accuracy": evaluated.get("twin_accuracy"),
            "nmse": fidelity.get("nmse_mean"), "noise_floor": fidelity.get("noise_floor_mean"),
            "jacobian_cosine_theta": fidelity.get("jacobian_cosine_theta"),
            "jacobian_cosine_x": fidelity.get("jacobian_cosine_x"),
            "device_time_s": evaluated["device_time_s"], "wall_s": time.perf_counter() - started}


def hand_written_pat_epoch(system, twin, theta, readout, x, y, batches, lr) -> None:
    """The minimal PAT loop: device forward, twin VJP backward through a straight-through surrogate (the twin's own
    parameters held fixed by `held_twin`, as in the framework: no gradient is computed for them)."""
    optimizer = torch.optim.Adam([theta, *readout.parameters()], lr=lr)
    for indices in batches:
        xb, yb = x[indices], y[indices]
        with torch.no_grad():
            measured = system.forward(xb, theta)
        modelled = held_twin(twin, xb, theta)
        outputs = modelled + (measured - modelled).detach()
        loss = torch.nn.functional.cross_entropy(readout(outputs), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            low, high = system.theta_bounds
            if system.theta_periodic:
                theta.sub_(low).remainder_(high - low).add_(low)
            else:
                theta.clamp_(low, high)


def overhead(base: Protocol, root: Path, repeats: int) -> dict[str, float]:
    """Median time per training step: orchestrator (Run.train, one epoch) / hand-written loop. ``ratio`` counts the
    epoch's checkpoint until it is on disk; ``ratio_in_thread`` leaves its write to the background thread, as a run
    on a bench overlaps it with the device's next steps (waited for, untimed, before the hand-written loop)."""
    protocol = variant_protocol(base, "pat_oracle", 0, 1)
    lab = lab_for(protocol, "realistic", 0)
    store = RunStore.create(root, "overhead")
    framework, in_thread, hand = [], [], []
    with lab:
        run = Run(protocol, lab, store, show_progress=False)
        run.prepare()
        run.calibrate()
        run.twin = run._new_twin()
        run._attach_twin()
        layer = physical_layers(run.model)[0]
        readout = copy.deepcopy(torch.nn.Sequential(*list(run.model)[1:]))  # the digital layers after it
        theta = torch.nn.Parameter(layer.theta.detach().clone())
        batches = run._batches(0)
        for _ in range(1 + repeats):  # the first round warms both loops up (first calls, caches) and is dropped
            run.epoch, run.batch = 0, 0
            started = time.perf_counter()
            run.train()
            returned = time.perf_counter()
            store.wait_for_checkpoint()  # the epoch's checkpoint is written in the background: the framework's work
            framework.append((time.perf_counter() - started) / len(batches))
            in_thread.append((returned - started) / len(batches))
            started = time.perf_counter()
            hand_written_pat_epoch(run.system, run.twin, theta, readout, run.x_train, run.y_train, batches,
                                   protocol.training.lr)
            hand.append((time.perf_counter() - started) / len(batches))
    store.close()
    framework, in_thread, hand = framework[1:], in_thread[1:], hand[1:]
    return {"framework_s_per_step": statistics.median(framework), "hand_written_s_per_step": statistics.median(hand),
            "ratio": statistics.median(framework) / statistics.median(hand),
            "ratio_in_thread": statistics.median(in_thread) / statistics.median(hand)}


def save(path: Path | None, results: dict[str, dict]) -> None:
    """Write the figures measured so far to ``path`` (``--json``; None: nowhere), whole or not at all, so that a
    benchmark stopped later (Ctrl-C, a failed run) keeps them."""
    if path is not None:
        atomic_write(path, json.dumps(results, indent=2).encode())


def main() -> None:
    parser = Parser(prog="benchmarks/mismatch.py", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=count, default=3)
    parser.add_argument("--systems", nargs="+", default=list(PROTOCOLS))
    parser.add_argument("--presets", nargs="+", default=["realistic", "harsh"])
    parser.add_argument("--epochs", type=count, default=None, help="override the protocols' epochs")
    parser.add_argument("--overhead-repeats", type=count, default=5)
    parser.add_argument("--overhead-only", action="store_true", help="measure only the framework overhead")
    parser.add_argument("--json", type=writable_file, default=None, help="also write the figures here")
    args = parser.parse_args()
    check_names(parser, "--systems", args.systems, PROTOCOLS, "the systems this benchmark has a protocol for")
    for system in args.systems:
        protocol = YamlDocument.read(ROOT / PROTOCOLS[system]).validate(Protocol)
        config = YamlDocument.read(ROOT / protocol.lab).validate(LabConfig)
        check_presets(parser, config, worlds_of(config, protocol.system), args.presets)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for system in [] if args.overhead_only else args.systems:
            document = YamlDocument.read(ROOT / PROTOCOLS[system])
            base = document.validate(Protocol)
            for preset in args.presets:
                key = f"{system}/{preset}"
                results[key] = {v: [] for v in VARIANTS}
                for seed in range(args.seeds):
                    for variant in VARIANTS:
                        protocol = variant_protocol(base, variant, seed, args.epochs)
                        lab = lab_for(protocol, "ideal" if variant == "ideal" else preset, seed)
                        figures = run_once(protocol, lab, root)
                        results[key][variant].append(figures)
                        save(args.json, results)
                        nmse = figures["nmse"] if figures["nmse"] is not None else float("nan")
                        print(f"{key:22s} seed {seed} {variant:10s} device acc {figures['device_accuracy']:.3f} "
                              f"(twin NMSE {nmse:.4f}, {figures['wall_s']:.0f} s)", flush=True)
        results["overhead"] = {system: overhead(YamlDocument.read(ROOT / PROTOCOLS[system]).validate(Protocol), root,
                                                args.overhead_repeats) for system in args.systems}
        save(args.json, results)
    print()
    print(f"{'system/preset':22s} " + " ".join(f"{v:>16s}" for v in VARIANTS))
    for key, variants in results.items():
        if key == "overhead":
            continue
        cells = []
        for variant in VARIANTS:
            accuracies = [100 * r["device_accuracy"] for r in variants[variant]]
            spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            cells.append(f"{statistics.mean(accuracies):8.1f} ± {spread:4.1f}")
        print(f"{key:22s} " + " ".join(f"{c:>16s}" for c in cells))
    print("\nPAT framework overhead per training step (orchestrator / hand-written loop, medians; in thread: the "
          "checkpoint left to its background writer):")
    for system, o in results["overhead"].items():
        print(f"  {system:12s} {o['framework_s_per_step'] * 1e3:7.2f} ms / {o['hand_written_s_per_step'] * 1e3:7.2f} ms"
              f" = {o['ratio']:.3f} (in thread {o['ratio_in_thread']:.3f})")


if __name__ == "__main__":
    run(main)
