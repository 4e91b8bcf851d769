"""The GPU paths, proven in one command: `python -m benchmarks.gpu_check`.

On a machine with an NVIDIA GPU (about 5 minutes on one; nothing to prepare beyond the
README's set-up) it checks, each in a fresh process so that `CUDA_VISIBLE_DEVICES` is set
before TensorFlow is imported:

1. speed: both engines on the digits CNN and on a ResNet-style CNN over generated 32x32
   images — steps/s on the GPU against the CPU, float32 against `mixed_float16` (the loss
   scale read back), `jit_compile` on against off;
2. tracking: every update logged to MLflow (sqlite) and TensorBoard against untracked, on the
   GPU, with the digits MLP (the fastest step, where tracking is most exposed);
3. a 4-trial search with `--devices 0`: each trial saw exactly GPU 0, memory growth on,
   `system/gpu_0_*` metrics on every trial run, the GPU's memory back where it was once the
   search ended (`nvidia-smi`); `--devices 0,0` refused in one line;
4. `MirroredStrategy` over GPU 0 and the CPU (over two GPUs where there are two).

It prints a table, writes it to `--output` (Markdown, to quote in docs/benchmarks.md) and
exits 1 if a check failed. Without a GPU it says so in one line and exits 0.

    python -m benchmarks.gpu_check [--output gpu_check.md] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEED_ROWS = [  # engine, device, precision, jit
    ("fit", "gpu", "float32", False),
    ("custom", "gpu", "float32", False),
    ("fit", "cpu", "float32", False),
    ("custom", "cpu", "float32", False),
    ("fit", "gpu", "mixed_float16", False),
    ("custom", "gpu", "mixed_float16", False),
    ("fit", "gpu", "float32", True),
    ("custom", "gpu", "float32", True),
]


# What one fresh process measures (`--measure SPECS`).

_GPUS: dict[str, list[str]] = {}  # this process's GPUs, memory growth turned on once


def problem(name: str, batch_size: int) -> tuple[Any, Any]:
    """A compiled-later model and its `TrainingData`: `cnn` (the digits CNN), `resnet` (a
    ResNet-style CNN on generated 32x32 RGB images) or `mlp` (the digits MLP)."""
    import keras
    import numpy as np

    from experiments.zoo.datasets import load_digits, load_digits_images
    from experiments.zoo.models import build_cnn, build_mlp
    from harness.data import prepare_data

    keras.utils.set_random_seed(0)
    if name == "resnet":
        rng = np.random.default_rng(0)
        x = rng.random((8192, 32, 32, 3), dtype=np.float32)
        y = rng.integers(0, 10, 8192)
        model = resnet((32, 32, 3))
    else:
        loader, build = (
            (load_digits_images, lambda: build_cnn(filters=(16, 32), dense_units=64))
            if name == "cnn"
            else (load_digits, lambda: build_mlp(hidden_units=(128, 64)))
        )
        x, y = loader()
        x, y = np.concatenate([x] * 4), np.concatenate([y] * 4)
        model = build()
    return model, prepare_data((x, y), batch_size=batch_size, seed=0)


def resnet(input_shape: tuple[int, ...], widths: tuple[int, ...] = (32, 64, 128)) -> Any:
    """Three stages of two residual blocks each (3x3 convolutions, batch norm), global
    pooling, a softmax over 10 classes: about 0.7 M weights."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    for stage, width in enumerate(widths):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            x = layers.Conv2D(width, 3, stride, padding="same", use_bias=False)(x)
            x = layers.Activation("relu")(layers.BatchNormalization()(x))
            x = layers.BatchNormalization()(layers.Conv2D(width, 3, padding="same")(x))
            if stride != 1 or shortcut.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, stride, use_bias=False)(shortcut)
            x = layers.Activation("relu")(layers.Add()([x, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet_style")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Steady-state steps/s of one setting: `1 + epochs` epochs of `steps` updates, the
    first excluded (trace, warm-up); tracked runs log every update to MLflow + TensorBoard."""
    import keras

    from benchmarks.overhead import Clock, tracked_sink, wait_for_the_writer_process
    from harness import train
    from harness.devices import enable_memory_growth, mirrored_strategy
    from harness.precision import dtype_policy, loss_scale

    gpus = _GPUS.setdefault("names", enable_memory_growth())  # once, before the GPU starts
    cpus = [d for d in spec.get("devices") or [] if d.upper().startswith("CPU")]
    if len(cpus) > 1 and "split" not in _GPUS:  # replicas on the CPU: split it first, once
        import tensorflow as tf

        (cpu,) = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * len(cpus)
        )
        _GPUS["split"] = []
    strategy = mirrored_strategy(spec["devices"]) if spec.get("devices") else None
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with dtype_policy(spec.get("precision", "float32")), scope:
        model, data = problem(spec["model"], spec.get("batch_size", 64))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=spec.get("jit", False),
        )
    callbacks, sink = [], None
    if spec.get("tracked"):
        from harness.callbacks import MetricsLogger

        sink = tracked_sink(Path(spec["root"]), f"{spec['model']}-{spec['engine']}")
        wait_for_the_writer_process(sink)
        callbacks = [MetricsLogger(sink, log_every_n_steps=1)]
    steps = min(spec.get("steps", 10**9), data.train.num_batches)
    clock = Clock(time.perf_counter())
    history = train(model, data, engine=spec["engine"], epochs=1 + spec.get("epochs", 3),
                    steps_per_epoch=steps, callbacks=[clock, *callbacks])  # fmt: skip
    end = time.perf_counter()
    if sink is not None:
        sink.close()
    (first_end, first_step), last = clock.marks[0], int(model.optimizer.iterations.numpy())
    scale = loss_scale(model.optimizer)
    return {
        "steps_per_sec": (last - first_step) / (end - first_end),
        "first_epoch_s": first_end - clock.start,
        "gpus": gpus,
        "weights_on": str(model.trainable_variables[0].value.device),
        "replicas": model.distribute_strategy.num_replicas_in_sync,
        "loss_scale": None if scale is None else float(keras.ops.convert_to_numpy(scale)),
        "loss": float(history.history["loss"][-1]),
    }


# The checks, run from the parent (which never imports TensorFlow).


def nvidia_smi(query: str) -> list[str]:
    """`nvidia-smi --query-gpu=QUERY`, a line per GPU; none where it is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    command = ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def in_fresh_process(specs: list[dict[str, Any]], *, visible: str) -> list[dict[str, Any]]:
    """`measure(spec)` of each spec, one after another in one new Python whose
    `CUDA_VISIBLE_DEVICES` is `visible`; a spec that failed gives `{"error": ...}`."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--measure", json.dumps(specs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    results = [
        json.loads(line[len("RESULT ") :])
        for line in done.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    if len(results) < len(specs):  # the process died: the rest say how
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        results += [{"error": f"exit {done.returncode}: {tail}"}] * (len(specs) - len(results))
    return results


def measure_each(specs: list[dict[str, Any]]) -> None:
    """In the child: a `RESULT {...}` line per spec, as soon as it is measured."""
    for spec in specs:
        try:
            result = measure(spec)
        except Exception as error:  # noqa: BLE001 - reported in the table, the rest go on
            result = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
        print("RESULT " + json.dumps(result), flush=True)


def speed_checks(root: Path, quick: bool) -> list[list[str]]:
    rows = []
    for model, batch in (("cnn", 64), ("resnet", 128)):
        results: dict[tuple[Any, ...], dict[str, Any]] = {}
        for device in ("gpu", "cpu"):  # one process per device: CUDA_VISIBLE_DEVICES differs
            settings = [row for row in SPEED_ROWS if row[1] == device]
            specs = [
                {
                    "model": model,
                    "engine": engine,
                    "precision": precision,
                    "jit": jit,
                    "batch_size": batch,
                    "epochs": 2 if quick else 3,
                    "steps": 8 if device == "cpu" and model == "resnet" else 64,
                }  # fmt: skip
                for engine, _, precision, jit in settings
            ]
            measured = in_fresh_process(specs, visible="0" if device == "gpu" else "")
            results.update(zip(settings, measured, strict=True))
        for setting in SPEED_ROWS:
            rows.append(["speed", _setting_name(model, setting), *_speed_cell(setting, results)])
    return rows


def _setting_name(model: str, setting: tuple[Any, ...]) -> str:
    engine, device, precision, jit = setting
    return f"{model} {engine} {device} {precision}{' jit' if jit else ''}"


def _speed_cell(
    setting: tuple[Any, ...], results: dict[tuple[Any, ...], dict[str, Any]]
) -> list[str]:
    """The result text of one speed row (against the GPU float32 row of its engine), and
    whether it passed: it ran where it should, and mixed precision scaled its loss."""
    engine, device, precision, _ = setting
    result = results[setting]
    if "error" in result:
        return [result["error"], "FAIL"]
    speed = result["steps_per_sec"]
    reference = results.get((engine, "gpu", "float32", False), {}).get("steps_per_sec")
    versus = "" if setting[1:] == ("gpu", "float32", False) or not reference else (
        f" ({speed / reference:.2f}x gpu float32)"
    )  # fmt: skip
    scale = result["loss_scale"]
    note = f", loss scale {scale:g}" if scale is not None else ""
    on_gpu = "GPU" in result["weights_on"]
    ok = on_gpu == (device == "gpu") and (precision == "float32" or scale is not None)
    where = f"weights on {result['weights_on'].split('device:')[-1]}"
    return [f"{speed:.0f} steps/s{versus}{note}; {where}", "ok" if ok else "FAIL"]


def tracking_checks(root: Path, quick: bool) -> list[list[str]]:
    specs = [
        {
            "model": "mlp",
            "engine": engine,
            "batch_size": 32,
            "tracked": tracked,
            "root": str(root),
            "epochs": 2 if quick else 4,
        }  # fmt: skip
        for engine in ("fit", "custom")
        for tracked in (False, True)
    ]
    results = in_fresh_process(specs, visible="0")
    rows = []
    for index, engine in enumerate(("fit", "custom")):
        untracked, tracked = results[2 * index : 2 * index + 2]
        failed = untracked.get("error") or tracked.get("error")
        if failed:
            rows.append(["tracking", f"mlp {engine} gpu", failed, "FAIL"])
            continue
        fast, slow = untracked["steps_per_sec"], tracked["steps_per_sec"]
        text = f"tracked every step {slow:.0f} / untracked {fast:.0f} steps/s = {slow / fast:.3f}"
        rows.append(["tracking", f"mlp {engine} gpu", text, "ok"])
    return rows


def search_checks(root: Path, quick: bool) -> list[list[str]]:
    from tracking.mlflow import MlflowRuns
    from tracking.mlflow.queries import tagged_runs

    uri = f"sqlite:///{root / 'search.db'}"
    config = ROOT / "experiments" / "configs" / "digits_cnn_search.yaml"
    harness = [sys.executable, "-m", "experiments.cli"]
    common = [str(config), "search.n_trials=4", "trainer.epochs=2", "search.study=gpu-check",
              "tracking.system_metrics_every_s=0.5", "--tracking-uri", uri]  # fmt: skip
    rows = []
    twice = subprocess.run([*harness, "search", *common, "--devices", "0,0"], cwd=ROOT,
                           capture_output=True, text=True, check=False)  # fmt: skip
    said = twice.stderr.strip().splitlines()
    refused = twice.returncode == 2 and len(said) == 1
    rows.append(["search", "--devices 0,0", said[-1] if said else "(nothing said)",
                 "ok" if refused else "FAIL"])  # fmt: skip
    before = int(nvidia_smi("memory.used")[0])
    done = subprocess.run([*harness, "search", *common, "--devices", "0"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    time.sleep(2)
    after = int(nvidia_smi("memory.used")[0])
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [
            *rows,
            ["search", "4 trials --devices 0", f"exit {done.returncode}: {tail}", "FAIL"],
        ]
    trials = tagged_runs(MlflowRuns(uri), {"harness.study": "gpu-check"})
    trials = [run for run in trials if "harness.trial_number" in run.data.tags]
    for run in sorted(trials, key=lambda r: int(r.data.tags["harness.trial_number"])):
        tags, metrics = run.data.tags, run.data.metrics
        gpus = [d for d in tags.get("harness.devices", "").split(",") if ":GPU:" in d]
        gpu_metrics = sorted(k for k in metrics if k.startswith("system/gpu_0_"))
        ok = (tags.get("harness.cuda_visible_devices") == "0" and len(gpus) == 1
              and tags.get("harness.gpu_memory_growth") == "on" and bool(gpu_metrics))  # fmt: skip
        text = (f"CUDA_VISIBLE_DEVICES={tags.get('harness.cuda_visible_devices')}, "
                f"{len(gpus)} GPU seen, memory growth {tags.get('harness.gpu_memory_growth')}, "
                f"{len(gpu_metrics)} system/gpu_0_* metrics")  # fmt: skip
        rows.append(
            ["search", f"trial {tags['harness.trial_number']}", text, "ok" if ok else "FAIL"]
        )
    rows.append(["search", "trials", f"{len(trials)} of 4", "ok" if len(trials) == 4 else "FAIL"])
    returned = after <= before + 64
    rows.append(["search", "GPU memory", f"{before} MiB before, {after} MiB after",
                 "ok" if returned else "FAIL"])  # fmt: skip
    return rows


def mirrored_checks(root: Path, quick: bool, gpus: int) -> list[list[str]]:
    devices = ["GPU:0", "GPU:1"] if gpus >= 2 else ["GPU:0", "CPU:0"]
    spec = {"model": "cnn", "engine": "custom", "devices": devices, "epochs": 1, "steps": 32}
    (result,) = in_fresh_process([spec], visible="0,1" if gpus >= 2 else "0")
    if "error" in result:
        return [["mirrored", " + ".join(devices), result["error"], "FAIL"]]
    ok = result["replicas"] == 2 and result["loss"] == result["loss"]  # finite, not NaN
    speed, loss = result["steps_per_sec"], result["loss"]
    text = f"{result['replicas']} replicas, {speed:.0f} steps/s, loss {loss:.3f}"
    return [["mirrored", " + ".join(devices), text, "ok" if ok else "FAIL"]]


def table(rows: list[list[str]], card: str) -> str:
    lines = [f"GPU check on {card}, {time.strftime('%Y-%m-%d')}", "",
             "| check | setting | result | |", "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="gpu_check.md", help="where the table is written")
    parser.add_argument("--quick", action="store_true", help="fewer epochs per measurement")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one measurement, in a child
    args = parser.parse_args(argv)
    if args.measure:
        measure_each(json.loads(args.measure))
        return 0
    cards = nvidia_smi("name")
    if not cards:
        print("gpu_check: no NVIDIA GPU on this machine (nvidia-smi lists none): nothing to check")
        return 0
    if importlib.util.find_spec("pynvml") is None:
        print(
            "gpu_check: GPU system metrics and CUDA TensorFlow come with the gpu extra, not "
            "installed here: run .venv/bin/pip install -e '.[gpu]' and this command again",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for check in (speed_checks, tracking_checks, search_checks):
            rows += check(root, args.quick)
            print(f"  {check.__name__}: {time.perf_counter() - started:.0f} s", flush=True)
        rows += mirrored_checks(root, args.quick, len(cards))
    text = table(rows, f"{cards[0]}" + (f" (+{len(cards) - 1} more)" if len(cards) > 1 else ""))
    text += f"\n{time.perf_counter() - started:.0f} s in all.\n"
    Path(args.output).write_text(text)
    print(text + f"written to {args.output}")
    return 1 if any(row[-1] == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
