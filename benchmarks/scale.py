"""How the script's cost grows with its images: the same run on MNIST and on sets 2, 4 and 8 times
its size, seconds per stage and peak memory at each, and each stage's growth exponent.

    python benchmarks/scale.py [--sizes 1 2 4 8] [--out scale] [-- FLAGS]

Size F holds F x 60,000 training and F x 10,000 test images: MNIST's own, then fresh copies of them
each shifted by up to 10% and rotated by up to 10 degrees at random (the student's augmentation),
labels carried over, written to OUT/mnist-xF.npz. The script runs on each size in turn, one at a
time and as a user runs it (its default threads), with FLAGS (default: the student recipe with two
epochs of training and one of the student, `--recipe student --epochs 2 --student 1`: the per-epoch
time is what grows; `--sizes 1 5 -- --recipe student` is the whole recipe on MNIST and on five
times MNIST). OUT/run-xF is that run's folder; a size whose folder holds a finished run with
the same flags is not run again. Peak memory is the largest sum of the resident sets of the run's
processes (workers included), read every 0.2 s: over the whole run, and during each stage the
script's log times.

OUT/scale.md then gives, headed by the command and the CPU, the seconds of each stage at each size
and its exponent: the slope of log seconds on log images between the two largest sizes (1 is
linear, 2 quadratic). OUT/scale.png draws the same on log-log axes.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

import common
from common import am
from speed import cpu_name

DEFAULT_FLAGS = ["--recipe", "student", "--epochs", "2", "--student", "1"]


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    arguments.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8],
                           help="multiples of MNIST's 60,000 + 10,000 images (default: 1 2 4 8)")
    arguments.add_argument("--out", type=Path, default=Path("scale"), help="folder (default: scale)")
    arguments.add_argument("flags", nargs="*", help=f"flags for the script, after -- (default: "
                           f"{' '.join(DEFAULT_FLAGS)})")
    args = arguments.parse_args()
    flags = args.flags or DEFAULT_FLAGS
    if min(args.sizes) < 1 or len(set(args.sizes)) < 2:
        arguments.error("--sizes takes two or more different whole numbers, 1 or more")
    if any(flag.startswith(("--data", "--out", "--resume", "--train-size", "--test-size"))
           for flag in flags):
        arguments.error("--data, --out, --resume and the sizes are this command's to set")
    am.parse_config(flags)  # a bad flag stops here, before any run
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    runs = {}
    for size in sizes:
        data = args.out / f"mnist-x{size}.npz"
        if not data.is_file():
            make_set(size, data)
        runs[size] = run(data, flags, args.out / f"run-x{size}")
    command = " ".join(["python benchmarks/scale.py", *sys.argv[1:]])
    table = stage_seconds(runs)
    (args.out / "scale.md").write_text(report(command, flags, sizes, runs, table))
    plot(sizes, runs, table, args.out / "scale.png")
    print((args.out / "scale.md").read_text())


def make_set(size: int, path: Path) -> None:
    """MNIST and size - 1 shifted and rotated copies of its images, with their labels, as an .npz."""
    mnist = np.load(am.check_bundled_data())
    rng = np.random.default_rng(size)
    arrays = {}
    for split in ("train", "test"):
        images, labels = mnist[f"x_{split}"], mnist[f"y_{split}"]
        copies = [images] + [np.stack([moved(image, rng) for image in images])
                             for _ in range(size - 1)]
        arrays.update({f"x_{split}": np.concatenate(copies), f"y_{split}": np.tile(labels, size)})
    print(f"size {size}: {len(arrays['x_train']):,} training and {len(arrays['x_test']):,} test "
          f"images in {path}", flush=True)
    partial = path.with_suffix(".partial.npz")  # whole or not at all: a stopped write is redone
    np.savez(partial, **arrays)
    os.replace(partial, path)


def moved(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An image (28, 28) rotated about its centre by up to ROTATION of a turn and shifted by up to
    SHIFT of its size, as the script's student sees its images; black fills what moved in."""
    angle = rng.uniform(-1, 1) * am.ROTATION * 2 * math.pi
    shift = rng.uniform(-1, 1, 2) * am.SHIFT * 28
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([13.5, 13.5])
    offset = centre - rotation @ (centre + shift)
    return np.clip(ndimage.affine_transform(image.astype(np.float32), rotation, offset, order=1),
                   0, 255).round().astype(np.uint8)


def run(data: Path, flags: list[str], out: Path) -> dict:
    """The script on `data` with `flags`, unless `out` holds that run finished; its metrics.json with
    the wall seconds and the peak memory of all its processes added."""
    config = am.config_record(am.parse_config([*flags, "--data", str(data), "--out", str(out)]))
    saved = out / "metrics.json"
    if saved.is_file() and json.loads(saved.read_text())["config"] == config:
        print(f"{out}: finished run kept", flush=True)
        return json.loads(saved.read_text())
    print(f"{out}: running, terminal output in {out}.log", flush=True)
    start, samples = time.perf_counter(), []
    with open(f"{out}.log", "w") as log:
        process = subprocess.Popen([sys.executable, str(common.HERE.parent / "autoencoder_mnist.py"),
                                    *flags, "--data", str(data), "--out", str(out)],
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        watch = threading.Thread(target=watch_memory, args=(process, samples), daemon=True)
        watch.start()
        status = process.wait()
        watch.join()
    if status:
        sys.exit(f"error: the run failed with status {status}; see {out}.log")
    metrics, wall = json.loads(saved.read_text()), time.perf_counter() - start
    samples = [(at - start, total) for at, total in samples]
    metrics["scale"] = {"wall_seconds": round(wall, 1),
                        "peak_memory_mb": round(max(total for _, total in samples) / 2**20),
                        "stage_peak_memory_mb": stage_peaks(
                            Path(f"{out}.log").read_text(), wall - metrics["timings"]["total"],
                            samples)}
    saved.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def watch_memory(process: subprocess.Popen, samples: list[tuple[float, int]]) -> None:
    """Until `process` ends, every 0.2 s, (when, the sum of the resident sets of its process group)
    into samples."""
    while process.poll() is None:
        total = 0
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.getpgid(int(entry.name)) == process.pid:
                    status = (entry / "status").read_text()
                    total += int(status.split("VmRSS:")[1].split()[0]) * 1024
            except (OSError, IndexError):  # a process that ended meanwhile, or a kernel thread
                continue
        samples.append((time.perf_counter(), total))
        time.sleep(0.2)


def stage_peaks(log: str, offset: float, samples: list[tuple[float, int]]) -> dict[str, int]:
    """Each stage's peak memory in MB: the largest of the samples (seconds since the run started,
    bytes) within the stage, as the log's lines "[ t s] STAGE done in d s" time it on the script's
    clock, which started `offset` seconds after the run."""
    peaks = {}
    for match in re.finditer(r"^\[ *([\d.]+) s\] (.+) done in ([\d.]+) s$", log, re.MULTILINE):
        end, stage, seconds = float(match[1]) + offset, match[2], float(match[3])
        peaks[stage] = round(max((total for at, total in samples if end - seconds <= at <= end),
                                 default=0) / 2**20)
    return peaks


def stage_seconds(runs: dict[int, dict]) -> dict[str, list[float]]:
    """Each stage's seconds at each size, in pipeline order; NaN where a run's version of the script
    did not record it (a curve of an earlier commit)."""
    rows = {}

    def add(name: str, value) -> None:
        rows.setdefault(name, []).append(value)

    for metrics in runs.values():
        timings, n_train = metrics["timings"], metrics["data"]["n_train"]
        add("data", timings["data"])
        add("imports", timings["imports"])
        add("training, last epoch", n_train / metrics["history"]["images_per_second"][-1])
        add("encode", timings["encode"])
        for kind in ("pixels", "latent"):
            if f"{kind}_shared_seconds" in metrics:
                add(f"{kind}: PCA and neighbour graphs", metrics[f"{kind}_shared_seconds"])
        for row in metrics["clustering"]:
            if row["reduction"] == "student":
                continue
            if row["clusterer"] == am.CLUSTERERS.get(row["reduction"], ("kmeans",))[0]:
                add(f"{row['features']}: {row['reduction']}", row["seconds"])
            add(f"{row['features']}: {row['reduction']}, {row['clusterer']} and scores",
                row.get("cluster_seconds", math.nan))
        add("reduce and cluster (both workers)", timings["reduce and cluster"])
        for kind, stage in (metrics["student"] or {}).items():
            add(f"student of the {am.NAMES[kind]}: targets", stage.get("targets_seconds", math.nan))
            add(f"student of the {am.NAMES[kind]}: last epoch", stage.get("epoch_seconds", [math.nan])[-1])
            add(f"student of the {am.NAMES[kind]} (whole stage)",
                timings[f"student of the {am.NAMES[kind]}"])
        add("outputs (plots, codes.npz)", timings["outputs"])
        add("whole run (wall)", metrics["scale"]["wall_seconds"])
    return rows


def exponent(images: list[int], seconds: list[float]) -> float:
    """The slope of log seconds on log images between the two largest sizes (NaN where a time is 0)."""
    if min(seconds[-2:]) <= 0:
        return math.nan
    return math.log(seconds[-1] / seconds[-2]) / math.log(images[-1] / images[-2])


def report(command: str, flags: list[str], sizes: list[int], runs: dict[int, dict],
           table: dict[str, list[float]]) -> str:
    """scale.md: the command, the CPU, and each stage's seconds at each size with its exponent."""
    images = [metrics["data"]["n_train"] + metrics["data"]["n_test"] for metrics in runs.values()]
    header = [f"x{size}: {metrics['data']['n_train']:,} + {metrics['data']['n_test']:,}"
              for size, metrics in runs.items()]
    lines = [f"# Cost against images: `{command}`", "",
             f"CPU: {cpu_name()}, {os.cpu_count()} cores, each run at the script's default threads, "
             f"one at a time. Flags: `{' '.join(flags)}`.", "",
             "Seconds per stage at each size (training + scored images); the exponent is the slope "
             "of log seconds on log images between the two largest sizes (1: linear, 2: quadratic).",
             "", "| stage | " + " | ".join(header) + " | exponent |",
             "| --- |" + " ---: |" * (len(header) + 1)]
    for name, seconds in table.items():
        if not any(seconds):  # the "none" reduction: nothing to time
            continue
        grows = "" if len(seconds) < len(sizes) else f"{exponent(images, seconds):.2f}"
        lines.append((f"| {name} | " + " | ".join(f"{value:.{1 if value >= 10 else 2}f}"
                                                  for value in seconds)
                      + f" | {grows} |").replace("nan", "—"))
    memory = [metrics["scale"]["peak_memory_mb"] for metrics in runs.values()]
    lines.append("| peak memory, all processes (MB) | " + " | ".join(f"{value:,}" for value in memory)
                 + f" | {exponent(images, memory):.2f} |")
    stages = dict.fromkeys(stage for metrics in runs.values()
                           for stage in metrics["scale"].get("stage_peak_memory_mb", {}))
    for stage in stages:  # recorded since 2026-12-08: older runs show a dash
        peaks = [metrics["scale"].get("stage_peak_memory_mb", {}).get(stage, math.nan)
                 for metrics in runs.values()]
        lines.append((f"| peak memory during {stage} (MB) | "
                      + " | ".join(f"{value:,.0f}" for value in peaks)
                      + f" | {exponent(images, peaks):.2f} |").replace("nan", "—"))
    wall = table["whole run (wall)"]
    lines += ["", f"The whole run on x{sizes[-1]} took {wall[-1] / wall[0]:.2f}x the run on x{sizes[0]}, "
              f"for {images[-1] / images[0]:.2f}x the images."]
    return "\n".join(lines + [""])


def plot(sizes: list[int], runs: dict[int, dict], table: dict[str, list[float]], path: Path) -> None:
    """Seconds of the main stages against images, log-log, with a line of slope 1 for reference."""
    plt = am.plt
    images = np.array([metrics["data"]["n_train"] + metrics["data"]["n_test"]
                       for metrics in runs.values()])
    fig, ax = plt.subplots(figsize=(9, 6))
    shown = [(name, seconds) for name, seconds in table.items()
             if len(seconds) == len(sizes) and max(seconds) >= 5 and "," not in name.split(":")[-1]]
    for line, (name, seconds) in enumerate(shown):  # past ten colours, another line style
        ax.plot(images, seconds, marker="os^"[line // 10], linestyle=("-", "--", ":")[line // 10],
                label=f"{name} ({exponent(images, seconds):.2f})")
    whole = table["whole run (wall)"]
    ax.plot(images, whole[0] * images / images[0], color="grey", linestyle="--",
            label="linear from the first size (exponent 1)")
    ax.set(xscale="log", yscale="log", xlabel="images, training + scored",
           ylabel="seconds", title="Seconds per stage against images (exponent between the two "
           "largest sizes)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    am.save(fig, path, dpi=110)


if __name__ == "__main__":
    main()
