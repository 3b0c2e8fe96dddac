"""Benchmark: throughput and peak memory of the prediction writers, with 4 MiB batches.

Every prediction is ``{"idx": int64 [16], "logits": float32 [16, 64, 1024]}`` (4 MiB + 128 B). Two parts:

1. Throughput, in one process. Each path runs a real ``lightning.pytorch.Trainer(accelerator="cpu", devices=1,
   logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[writer]).predict(model, loader,
   return_predictions=False)`` over ``--batches`` batches (default 50: 200 MiB). ``predict_step`` returns
   precomputed tensors, a pool of ``--batches`` distinct ones (the bytes come from RAM, not from a warm cache, and
   nothing is cloned). Only the ``predict`` call is timed. The same loop with NO writer is the zero baseline: its
   time is subtracted, repeat by repeat, from every other path's to give the writer-only time; the table shows both.
   The baselines are callbacks in that same loop, so Lightning's own cost of a prediction writer (sampler batch
   indices, hook calls) is charged to baselines and kit writers alike:
     raw files     open/write/close of the tensors' bytes, one new file per batch (baseline of the batch paths)
     raw append    the same bytes appended to one file kept open (baseline of the epoch paths and of parquet)
     ... reserved  each raw baseline again with the disk blocks reserved before the writes, as the kit's writers
                   now do (conformance._append): shows how much of a writer's lead over raw writes that alone gives
     torch.save    ``torch.save({**prediction, "batch_idx": tensor}, path)`` per batch (the seed's batch writer)
     seed epoch    ``BasePredictionWriter("epoch")``: Lightning keeps every prediction, one ``torch.save`` at the end
   Why a real Trainer and not the hooks on a fake trainer: the writers' hooks read the trainer (ranks, dataloaders,
   sampler indices) and ``setup``/``on_predict_start`` look at the output folder; a fake would leave out or misstate
   part of that cost. The loop without writer takes ~20 ms against 150-1300 ms of writing, so subtracting it adds
   little noise. One warm-up run per path (4 batches; the kit writers' output is read back with
   ``read_predictions`` and compared) precedes the repeats; the order of the paths rotates every repeat. Reported:
   medians; ratios are medians of the per-repeat ``writer-only time of the baseline / that of the path``, i.e. the
   path's throughput relative to the baseline's. Every run writes into a fresh folder under ``/tmp`` (deleted
   afterwards). Writes land in the page cache (``fsync=False``, the writers' default): this measures the CPU and
   copying cost of each path, not the disk. The epoch paths spill every batch to disk and collate the spill into
   the epoch file at the end, so they write each byte twice and read it once; that final step (the writer's
   ``finish``) is timed on its own too.
2. Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end) of ``predict`` at 25, 100 and 400 batches,
   each cell in a fresh subprocess (``--jobs`` at a time; the measure is per process). ``predict_step`` returns a
   fresh clone of one 4 MiB tensor per batch, so a writer that keeps predictions shows. Negative control: the seed's
   epoch writer (above). Growth is relative to the same path at 25 batches; the peak includes ~320 MiB of imported
   torch/lightning/pyarrow, so the MiB difference is shown too. The children are started through ``/bin/sh``:
   forked straight from this process, a child's ru_maxrss would start at this process's peak (the kernel keeps the
   high-water mark of the address space that an exec replaces), which would hide any growth below it. Each child's
   VmHWM is compared with its ru_maxrss as a check.

Takes about 4 minutes on 2 cores: throughput ~40 s (7 repeats: this shared machine varies by +-30% between runs,
so the min-max of the ratios is printed too); the rest is 21 subprocesses, each writing up to 3.2 GB.

    python bench/bench_writers.py [--repeats 7] [--batches 50] [--rss-batches 25,100,400] [--jobs 2]
    python bench/bench_writers.py --profile epoch-pt   # cProfile of one throughput run of one path, nothing else
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import json
import logging
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from conformance import ParquetPredictionWriter, PredictionWriter, read_predictions
from conformance._append import AppendFile, Reservation

ROWS = 16
LOGITS_SHAPE = (ROWS, 64, 1024)
BATCH_BYTES = ROWS * 8 + ROWS * 64 * 1024 * 4
MIB = 2**20

#: name -> (label, raw baseline it is measured against, target: the least ratio of its throughput to the baseline's)
PATHS: dict[str, tuple[str, str | None, float | None]] = {
    "none": ("no writer (zero baseline)", None, None),
    "raw-files": ("raw bytes, new file per batch", None, None),
    "raw-append": ("raw bytes, appended to one file", None, None),
    "raw-files-reserved": ("raw bytes, new file per batch, its blocks reserved first", "raw-files", None),
    "raw-append-reserved": ("raw bytes, appended, blocks reserved ahead (as the kit's writers do)", "raw-append",
                            None),
    "torch.save": ("torch.save per batch (seed)", "raw-files", None),
    "batch-pt": ("PredictionWriter batch .pt", "raw-files", 0.7),
    "batch-safetensors": ("PredictionWriter batch .safetensors", "raw-files", 0.8),
    "epoch-pt": ("PredictionWriter epoch .pt", "raw-append", 0.7),
    "epoch-safetensors": ("PredictionWriter epoch .safetensors", "raw-append", 0.7),
    "parquet": ("ParquetPredictionWriter", "raw-append", 0.7),
    "naive-epoch": ("seed epoch writer: list + torch.save", "raw-append", None),
}
#: Paths measured against their baseline, in pairs; the seed's epoch writer last, on its own (see throughput()).
MEASURED = ["raw-files-reserved", "raw-append-reserved", "torch.save", "batch-pt", "batch-safetensors", "epoch-pt", "epoch-safetensors", "parquet"]
RSS_PATHS = ["none", "batch-pt", "batch-safetensors", "epoch-pt", "epoch-safetensors", "parquet", "naive-epoch"]
KIT_WRITERS = {"batch-pt", "batch-safetensors", "epoch-pt", "epoch-safetensors", "parquet"}


# --- the model, data and baseline writers ----------------------------------------------------------------------


class Indices(Dataset):
    """``{"idx": i}`` for ``i < size``; the default collate makes ``idx`` an int64 tensor of the batch."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, int]:
        return {"idx": index}


class FixedPredictions(pl.LightningModule):
    """``predict_step`` returns a precomputed logits tensor (or a fresh clone of one) with the batch's ``idx``."""

    def __init__(self, pool: list[torch.Tensor], clone: bool) -> None:
        super().__init__()
        self.pool = pool
        self.clone_outputs = clone

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> Any:
        logits = self.pool[batch_idx % len(self.pool)]
        return {"idx": batch["idx"], "logits": logits.clone() if self.clone_outputs else logits}


def logits_pool(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(LOGITS_SHAPE, generator=generator) for _ in range(count)]


class _FolderWriter(BasePredictionWriter):
    """A baseline writer of one file per batch into ``output_dir``."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__("batch")
        self.output_dir = output_dir

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)


class RawFilePerBatch(_FolderWriter):
    """Baseline (a): the prediction's tensor bytes into a new file per batch."""

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        with open(self.output_dir / f"batch_{batch_idx}.bin", "wb") as stream:
            stream.writelines(tensor.contiguous().numpy() for tensor in prediction.values())


class RawAppend(BasePredictionWriter):
    """Baseline (b): the prediction's tensor bytes appended to one file kept open for the run."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__("batch")
        self.output_dir = output_dir
        self.stream: Any = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.stream = open(self.output_dir / "all.bin", "wb")  # noqa: SIM115 - open for the run

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        self.stream.writelines(tensor.contiguous().numpy() for tensor in prediction.values())

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stream.close()


class ReservedFilePerBatch(_FolderWriter):
    """Reference: as RawFilePerBatch, with the file's blocks reserved before writing (what the kit's writers do)."""

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        arrays = [tensor.contiguous().numpy() for tensor in prediction.values()]
        with open(self.output_dir / f"batch_{batch_idx}.bin", "wb") as stream:
            Reservation(stream.fileno()).cover(sum(array.nbytes for array in arrays), ahead=False)
            stream.writelines(arrays)


class ReservedAppend(RawAppend):
    """Reference: as RawAppend, through the kit's AppendFile, which reserves blocks ahead of the writes."""

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.stream = AppendFile(self.output_dir / "all.bin")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        self.stream.write([tensor.contiguous().numpy() for tensor in prediction.values()])


class TorchSavePerBatch(_FolderWriter):
    """Baseline (c), the seed's batch writer: ``torch.save`` of the prediction dict plus ``batch_idx``."""

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        saved = {**prediction, "batch_idx": torch.tensor([batch_idx], dtype=torch.int64)}
        torch.save(saved, self.output_dir / f"predictions__rank_0__batch_{batch_idx}.pt")


class NaiveEpochWriter(BasePredictionWriter):
    """Negative control, the seed's epoch writer: Lightning buffers every prediction; one torch.save at the end."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__("epoch")
        self.output_dir = output_dir

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        torch.save(predictions, self.output_dir / "predictions__rank_0.pt")


def make_writer(name: str, output_dir: Path) -> pl.Callback | None:
    factories: dict[str, Callable[[], pl.Callback | None]] = {
        "none": lambda: None,
        "raw-files": lambda: RawFilePerBatch(output_dir),
        "raw-append": lambda: RawAppend(output_dir),
        "raw-files-reserved": lambda: ReservedFilePerBatch(output_dir),
        "raw-append-reserved": lambda: ReservedAppend(output_dir),
        "torch.save": lambda: TorchSavePerBatch(output_dir),
        "batch-pt": lambda: PredictionWriter(output_dir, "batch", format="pt"),
        "batch-safetensors": lambda: PredictionWriter(output_dir, "batch", format="safetensors"),
        "epoch-pt": lambda: PredictionWriter(output_dir, "epoch", format="pt"),
        "epoch-safetensors": lambda: PredictionWriter(output_dir, "epoch", format="safetensors"),
        "parquet": lambda: ParquetPredictionWriter(output_dir),
        "naive-epoch": lambda: NaiveEpochWriter(output_dir),
    }
    return factories[name]()


def quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")


def predict(name: str, model: FixedPredictions, batches: int, work_root: Path, *,
            keep: Callable[[Path], None] | None = None, profile: Any = None) -> dict[str, float]:
    """One ``trainer.predict`` with writer ``name`` into a fresh folder under ``work_root``, deleted afterwards.

    Returns the wall time of ``predict``, the time of the writer's ``finish`` (epoch collation, closing the shard)
    and the bytes left on disk. ``keep`` is called with the output folder before it is deleted.
    """
    work = Path(tempfile.mkdtemp(prefix=f"bench-writers-{name}-", dir=work_root))
    try:
        output = work / "predictions"
        writer = make_writer(name, output)
        timings = {"finish": float("nan")}
        if writer is not None and hasattr(writer, "finish"):
            original = writer.finish

            def timed_finish() -> None:
                started = time.perf_counter()
                original()
                timings["finish"] = time.perf_counter() - started

            writer.finish = timed_finish  # type: ignore[method-assign]
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, default_root_dir=work,
                             callbacks=[writer] if writer is not None else [])
        loader = DataLoader(Indices(batches * ROWS), batch_size=ROWS, num_workers=0)
        gc.collect()
        if profile is not None:
            profile.enable()
        started = time.perf_counter()
        trainer.predict(model, dataloaders=loader, return_predictions=False)
        timings["wall"] = time.perf_counter() - started
        if profile is not None:
            profile.disable()
        timings["disk"] = sum(path.stat().st_size for path in work.rglob("*") if path.is_file())
        if keep is not None:
            keep(output)
        return timings
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_output(name: str, batches: int, pool: list[torch.Tensor]) -> Callable[[Path], None]:
    """A ``keep`` hook that reads a kit writer's folder back and compares it with what predict_step returned."""

    def check(output: Path) -> None:
        if name not in KIT_WRITERS:
            return
        read = read_predictions(output)
        expected_ids = torch.arange(batches * ROWS)
        logits = read.predictions["logits"]
        expected = torch.cat([pool[index % len(pool)] for index in range(batches)])
        if not (torch.equal(read.sample_ids, expected_ids) and torch.equal(logits, expected) and read.complete):
            raise RuntimeError(f"{name}: the predictions read back differ from those predicted")

    return check


# --- part 1: throughput ----------------------------------------------------------------------------------------


def throughput(repeats: int, batches: int, work_root: Path, measured: list[str]) -> list[str]:
    pool = logits_pool(batches)
    model = FixedPredictions(pool, clone=False)
    paths = {name: PATHS[name] for name in PATHS
             if name in measured or any(PATHS[other][1] == name for other in measured) or name == "none"}
    for name in paths:  # warm-up: imports, first-call allocations; checks the output reads back
        predict(name, model, 4, work_root, keep=check_output(name, 4, pool))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in PATHS}
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in measured}

    def measure(name: str, order: int) -> None:
        """The zero loop, the baseline and the path back to back (the latter two in ``order``): one ratio."""
        baseline = PATHS[name][1]
        assert baseline is not None
        zero = predict("none", model, batches, work_root)
        timed = {}
        for step in (baseline, name) if order % 2 == 0 else (name, baseline):
            timed[step] = predict(step, model, batches, work_root)
        for step, run in (("none", zero), *timed.items()):
            runs[step].append({**run, "only": run["wall"] - zero["wall"]})
        pairs[name].append((timed[baseline]["wall"] - zero["wall"], timed[name]["wall"] - zero["wall"]))

    rotated = [name for name in MEASURED if name in measured]
    for repeat in range(repeats):
        shift = repeat % max(1, len(rotated))
        for name in rotated[shift:] + rotated[:shift]:
            measure(name, repeat)
    for repeat in range(repeats if "naive-epoch" in measured else 0):  # it frees ~200 MiB per run, after which
        measure("naive-epoch", repeat)  # new writes are slower for a while: not beside the others
    mib = batches * BATCH_BYTES / MIB
    lines = [(f"Throughput: {batches} batches of {BATCH_BYTES / MIB:.2f} MiB ({mib:.0f} MiB) per run. {repeats} "
              "repeats; in each, every path runs right beside its raw baseline (alternating which goes first) and "
              "after the loop without writer, the paths in rotating order. writer-only = wall - wall of that loop. "
              "ratio = baseline writer-only time / path writer-only time per pair (> 1: faster than the baseline): "
              "median [quartiles] (min-max)."),
             "",
             ("| path | wall [s] | writer-only [s] | writer-only MiB/s | throughput vs raw baseline | of which "
              "finish [s] | on disk [MiB] | target |"),
             "|---|---:|---:|---:|---|---:|---:|---|"]
    for name, (label, baseline, target) in paths.items():
        wall = statistics.median(run["wall"] for run in runs[name])
        seconds = statistics.median(run["only"] for run in runs[name])
        disk = statistics.median(run["disk"] for run in runs[name]) / MIB
        finish = statistics.median(run["finish"] for run in runs[name])
        finished = "-" if math.isnan(finish) else f"{finish:.3f}"
        if baseline is None:
            speed = "-" if name == "none" else f"{mib / seconds:.0f}"
            lines.append(f"| {label} | {wall:.3f} | {seconds:.3f} | {speed} | (baseline) | - | {disk:.0f} | - |")
            continue
        ratios = sorted(base / path for base, path in pairs[name])
        low, middle, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        shown = (f"{middle:.2f}x [{low:.2f}-{high:.2f}] ({ratios[0]:.2f}-{ratios[-1]:.2f}) of {baseline}")
        verdict = "-" if target is None else f">= {target}x: {'met' if middle >= target else 'MISSED'}"
        lines.append(f"| {label} | {wall:.3f} | {seconds:.3f} | {mib / seconds:.0f} | {shown} | {finished} | "
                     f"{disk:.0f} | {verdict} |")
    return lines


# --- part 2: peak RSS ------------------------------------------------------------------------------------------


def vm_hwm_mib() -> float:
    """The kernel's high-water mark of this process image's RSS (``VmHWM``), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_child(name: str, batches: int, work_root: Path) -> None:
    """In a fresh process: one predict with writer ``name``; print its peak RSS as JSON."""
    quiet_lightning()
    model = FixedPredictions(logits_pool(1), clone=True)
    timings = predict(name, model, batches, work_root)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"peak": peak, "hwm": vm_hwm_mib(), "wall": timings["wall"], "disk": timings["disk"] / MIB}))


def peak_rss(counts: list[int], jobs: int, work_root: Path) -> list[str]:
    # A child's ru_maxrss starts from the peak RSS of the process that forked it (the kernel carries the pre-exec
    # address space's high-water mark into the new image's), which here would be this process with torch and the
    # throughput pool loaded. /bin/sh forks the child instead, so its ru_maxrss starts from the small shell's.
    # VmHWM (the new image's own mark) is read too as a cross-check.
    def run(name: str, batches: int) -> dict[str, float]:
        command = [sys.executable, __file__, "--rss-child", name, str(batches), str(work_root)]
        output = subprocess.run(["/bin/sh", "-c", '"$@"; exit $?', "sh", *command], check=False,
                                capture_output=True, text=True, cwd=ROOT)
        if output.returncode:
            raise RuntimeError(f"{name} at {batches} batches failed:\n{output.stderr[-3000:]}")
        return json.loads(output.stdout.strip().splitlines()[-1])

    tasks = [(name, count) for count in sorted(counts, reverse=True) for name in RSS_PATHS]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {task: pool.submit(run, *task) for task in tasks}
        results = {task: future.result() for task, future in futures.items()}
    first = min(counts)
    mismatch = max(abs(result["peak"] - result["hwm"]) for result in results.values())
    lines = [(f"Peak RSS (ru_maxrss at the end) of a predict run with {BATCH_BYTES / MIB:.2f} MiB batches, one "
              f"fresh process per cell ({mismatch:.1f} MiB at most from its VmHWM); growth relative to {first} "
              "batches, target: flat within 5%."),
             "",
             ("| path | " + " | ".join(f"{count} batches [MiB]" for count in counts) + " | "
              + " | ".join(f"growth {count} vs {first}" for count in counts if count != first)
              + " | flat within 5% |"),
             "|---|" + "---:|" * (2 * len(counts) - 1) + "---|"]
    for name in RSS_PATHS:
        peaks = [results[(name, count)]["peak"] for count in counts]
        base = results[(name, first)]["peak"]
        growth = [(peak - base) / base for count, peak in zip(counts, peaks) if count != first]
        deltas = [peak - base for count, peak in zip(counts, peaks) if count != first]
        flat = all(value <= 0.05 for value in growth)
        label = PATHS[name][0] + (" (negative control)" if name == "naive-epoch" else "")
        lines.append(f"| {label} | " + " | ".join(f"{peak:.0f}" for peak in peaks) + " | "
                     + " | ".join(f"{value:+.1%} ({delta:+.1f} MiB)" for value, delta in zip(growth, deltas))
                     + f" | {'yes' if flat else 'NO'} |")
    return lines


def profile_one(name: str, batches: int, work_root: Path) -> None:
    import cProfile
    import pstats

    model = FixedPredictions(logits_pool(batches), clone=False)
    predict(name, model, 4, work_root)
    profiler = cProfile.Profile()
    timings = predict(name, model, batches, work_root, profile=profiler)
    print(f"{name}: wall {timings['wall']:.3f} s, finish {timings['finish']:.3f} s")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--batches", type=int, default=50, help="batches per throughput run")
    parser.add_argument("--rss-batches", default="25,100,400", help="comma-separated batch counts of the RSS part")
    parser.add_argument("--jobs", type=int, default=2, help="RSS subprocesses at a time")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--paths", default=",".join([*MEASURED, "naive-epoch"]),
                        help="comma-separated paths of the throughput part (their baselines run with them)")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--profile", choices=[name for name in PATHS if name != "none"],
                        help="only cProfile one throughput run of this path")
    args = parser.parse_args()
    quiet_lightning()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-writers-", dir="/tmp") as work:
        work_root = Path(work)
        if args.profile:
            profile_one(args.profile, args.batches, work_root)
            return
        if not args.skip_throughput:
            measured = args.paths.split(",")
            print("\n".join(throughput(args.repeats, args.batches, work_root, measured)), end="\n\n", flush=True)
        if not args.skip_rss:
            counts = [int(count) for count in args.rss_batches.split(",")]
            print("\n".join(peak_rss(counts, args.jobs, work_root)), end="\n\n")
    print(f"total {time.perf_counter() - started:.0f} s; torch {torch.__version__}, lightning {pl.__version__}, "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    else:
        main()
