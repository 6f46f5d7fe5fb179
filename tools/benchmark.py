#!/usr/bin/env python
"""
Side-by-side cost of detectors: parameters, FLOPs, inference latency, training time per
iteration and peak memory, each also as a ratio to the first model, in one markdown table
(and a JSON file).

    python tools/benchmark.py --configs configs/shapes/faster_rcnn.yaml configs/shapes/dh.yaml \\
        --weights output/shapes/faster_rcnn/model_final.pth output/shapes/dh/model_final.pth \\
        --device cuda --output speed.json
    # CI-sized, on the CPU:
    python tools/benchmark.py --configs configs/shapes/faster_rcnn.yaml configs/shapes/dh.yaml \\
        --device cpu --input-size 320 256 --num-proposals 100 --iters 3 --warmup 1

Each --configs item is a config file, optionally followed by its own KEY VALUE overrides in the
same (quoted) argument: "configs/shapes/dh.yaml MODEL.DOUBLE_HEAD.FAST_PATH False". Models
without --weights keep their random initialisation. Every model is measured in a fresh
subprocess, so peak memories do not mix:

- params (M): every parameter, in millions.
- GFLOPs: fvcore's count (a multiply-add is one flop, as in the papers) of one inference on a
  W x H image (--input-size), backbone and RPN head included, the RoI heads fed --num-proposals
  fixed boxes instead of the RPN's, every head on every box (Double-Head's FAST_PATH and
  FUSED_PREFILTER_THRESH off: what they save shows in the latency).
- latency: milliseconds per image, model([image]) in eval mode, on --iters images of --dataset
  after --warmup more, resized as the config does at test time but with short side H and long
  side at most W; median and the 10th / 90th percentiles. The RPN keeps up to --num-proposals
  boxes (the JSON's proposals_per_image: how many the RoI heads got on average).
- RoIs per image, per head: how many RoIs each box head ran on per timed image (the JSON's
  head_rois_per_image): all proposals, or fewer where a fast path skips low-scoring ones.
- train: median seconds per training iteration (forward, backward, optimizer step of
  Detectron2's SimpleTrainer) on SOLVER.IMS_PER_BATCH images of the training set, resized the
  same way, over --iters iterations after --warmup; data loading not included.
- peak memory (MiB), in inference and in training: CUDA's max allocated memory; on the CPU the
  peak resident set size above the process's before the model was built (the training figure
  is the peak of the whole run so far).
On CUDA every timing synchronises the device before reading the clock.
"""

import argparse
import json
import logging
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, DatasetMapper, get_detection_dataset_dicts
from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler, build_optimizer
from detectron2.structures import Boxes, Instances
from detectron2.utils.analysis import FlopCountAnalysis
from detectron2.utils.events import EventStorage
from torch import nn

from detcommon.config import build_config
from detcommon.engine import setup_run
from detcommon.heads import count_head_rois, disable_fast_paths
from detcommon.inference import features_and_proposals

# every figure of a result, with its unit; "ratios" has the same keys
COLUMNS = {
    "params_m": "parameters, millions",
    "gflops": "GFLOPs, fixed proposals",
    "latency_ms": "inference latency per image, median, ms",
    "latency_p10_ms": "inference latency per image, 10th percentile, ms",
    "latency_p90_ms": "inference latency per image, 90th percentile, ms",
    "train_iter_s": "training iteration, median, s",
    "infer_peak_mib": "peak memory in inference, MiB",
    "train_peak_mib": "peak memory in training, MiB",
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        metavar="'FILE [KEY VALUE ...]'",
        help="models to compare; the first is the reference of the ratios",
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        default=[],
        metavar="FILE",
        help="one checkpoint per config, '' or none for random weights",
    )
    parser.add_argument(
        "--names", nargs="+", default=[], help="row names (default: from the configs)"
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    parser.add_argument("--input-size", nargs=2, type=int, default=[1333, 800], metavar=("W", "H"))
    parser.add_argument("--num-proposals", type=int, default=1000)
    parser.add_argument(
        "--iters",
        type=int,
        default=20,
        help="timed inference images, and timed training iterations",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed images / iterations first")
    parser.add_argument(
        "--dataset", default="shapes_val", help="registered dataset of the latency images"
    )
    parser.add_argument(
        "--train-dataset",
        default=None,
        help="dataset of the training iterations (default: the config's DATASETS.TRAIN)",
    )
    parser.add_argument("--output", metavar="FILE.json", help="also write the results here")
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides for every config"
    )
    parser.add_argument("--worker", nargs=2, metavar=("JOB", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if not args.configs:
            parser.error("--configs is required")
        for option in ("weights", "names"):
            if getattr(args, option) and len(getattr(args, option)) != len(args.configs):
                parser.error(f"--{option} needs one value per config ({len(args.configs)})")
        if args.iters < 1 or args.warmup < 0:
            parser.error("--iters must be >= 1 and --warmup >= 0")
        if args.device == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: CUDA is not available")
    return args


def default_name(item: str) -> str:
    """'configs/shapes/dh.yaml MODEL.X.FAST_PATH False' -> 'shapes/dh FAST_PATH=False'."""
    path, *overrides = shlex.split(item)
    name = os.path.splitext(path)[0]
    name = name[len("configs/") :] if name.startswith("configs/") else name
    pairs = zip(overrides[::2], overrides[1::2])
    return " ".join([name] + [f"{key.split('.')[-1]}={value}" for key, value in pairs])


# ------------------------------------------------------------------------------------------
# Worker: measures one model in its own process.


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak_memory(device: str):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_mib(device: str, base_rss: float) -> float:
    """CUDA's max allocated memory since the last reset, or the peak RSS above `base_rss`."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _peak_rss_mib() - base_rss


def _setup(job: dict, output_dir: str):
    """The model's frozen config, as train_net.py builds it, with the benchmark's sizes."""
    width, height = job["input_size"]
    path, *overrides = shlex.split(job["config"])
    opts = overrides + job["opts"] + [
        "MODEL.WEIGHTS", job["weights"],
        "MODEL.DEVICE", job["device"],
        "OUTPUT_DIR", output_dir,
        "INPUT.MIN_SIZE_TEST", str(height),
        "INPUT.MAX_SIZE_TEST", str(width),
        "INPUT.MIN_SIZE_TRAIN", f"({height},)",
        "INPUT.MAX_SIZE_TRAIN", str(width),
        "MODEL.RPN.POST_NMS_TOPK_TEST", str(job["num_proposals"]),
    ]  # fmt: skip
    cfg = build_config(path, opts)
    setup_run(cfg)
    cfg.defrost()
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = max(cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, job["num_proposals"])
    cfg.freeze()
    return cfg


def _cycle(items: list, n: int) -> list:
    if not items:
        raise ValueError("the dataset has no usable image")
    return [items[i % len(items)] for i in range(n)]


def measure_latency(model: nn.Module, images: list, warmup: int, device: str):
    """
    Returns:
        seconds per image of model([image]) in eval mode, the first `warmup` images dropped;
        the mean number of proposals the RoI heads got per image; head name -> mean number of
        RoIs that box head ran on per image (what a fast path leaves it), same images.
    """
    model.eval()
    times, proposals = [], []
    hook = model.roi_heads.register_forward_pre_hook(
        lambda module, args: proposals.append(len(args[2][0]))  # (images, features, proposals)
    )
    with torch.no_grad(), count_head_rois(model.roi_heads) as counts:
        for i, image in enumerate(images):
            if i == warmup:
                before = dict(counts)  # the warm-up's RoIs, not counted
            _sync(device)
            start = time.perf_counter()
            model([image])
            _sync(device)
            times.append(time.perf_counter() - start)
    hook.remove()
    rois = {name: (counts[name] - before[name]) / (len(images) - warmup) for name in counts}
    return times[warmup:], float(np.mean(proposals[warmup:])), rois


def measure_training(cfg, model: nn.Module, batches: list, warmup: int) -> list:
    """Seconds per SimpleTrainer step on each batch, the first `warmup` dropped."""
    model.train()
    optimizer = build_optimizer(cfg, model)
    build_lr_scheduler(cfg, optimizer)  # the learning rate of the warm-up's first iteration
    trainer = SimpleTrainer(model, batches, optimizer)
    times = []
    with EventStorage():
        for _ in batches:
            _sync(cfg.MODEL.DEVICE)
            start = time.perf_counter()
            trainer.run_step()
            _sync(cfg.MODEL.DEVICE)
            times.append(time.perf_counter() - start)
    return times[warmup:]


def fixed_proposals(num: int, width: int, height: int) -> torch.Tensor:
    """(num, 4) seeded random boxes inside a width x height image, sides of 16 px to half of it."""
    g = torch.Generator().manual_seed(0)
    limits = torch.tensor([width, height], dtype=torch.float32)
    sizes = 16 + torch.rand(num, 2, generator=g) * (limits / 2 - 16).clamp(min=0)
    corners = torch.rand(num, 2, generator=g) * (limits - sizes)
    return torch.cat([corners, corners + sizes], dim=1)


class FixedProposalInference(nn.Module):
    """
    A GeneralizedRCNN's inference on one (3, H, W) image whose RoI heads get the given (R, 4)
    boxes as proposals; the RPN still runs (its cost counts), its proposals are dropped.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, boxes: torch.Tensor):
        model = self.model
        # The RPN runs for its cost; its proposals are replaced by the fixed ones.
        images, features, _ = features_and_proposals(
            model, [{"image": image}], model.proposal_generator is not None
        )
        proposals = Instances(
            images.image_sizes[0],
            proposal_boxes=Boxes(boxes),
            objectness_logits=boxes.new_zeros(len(boxes)),
        )
        detections, _ = model.roi_heads(images, features, [proposals])
        return detections


def count_gflops(cfg, num_proposals: int, width: int, height: int) -> float:
    """fvcore GFLOPs of :class:`FixedProposalInference`, every head on every proposal."""
    # Fast paths skip boxes by score; random weights would make the count arbitrary.
    detector = build_model(cfg)
    disable_fast_paths(detector.roi_heads)
    model = FixedProposalInference(detector).eval()
    device = torch.device(cfg.MODEL.DEVICE)
    image = torch.rand(3, height, width, device=device) * 255
    boxes = fixed_proposals(num_proposals, width, height).to(device)
    with torch.no_grad():
        flops = FlopCountAnalysis(model, (image, boxes))
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return flops.total() / 1e9


def run_worker(job: dict) -> dict:
    """Every figure of COLUMNS (and proposals_per_image) for the model of `job`."""
    device, warmup, iters = job["device"], job["warmup"], job["iters"]
    base_rss = _peak_rss_mib()
    cfg = _setup(job, job["output_dir"])
    model = build_model(cfg)
    if job["weights"]:
        DetectionCheckpointer(model).load(job["weights"])
    result = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6}

    test_mapper = DatasetMapper(cfg, is_train=False)
    images = [test_mapper(d) for d in _cycle(DatasetCatalog.get(job["dataset"]), warmup + iters)]
    _reset_peak_memory(device)
    latency, result["proposals_per_image"], result["head_rois_per_image"] = measure_latency(
        model, images, warmup, device
    )
    latency = np.array(latency) * 1000
    result.update(
        latency_ms=float(np.median(latency)),
        latency_p10_ms=float(np.percentile(latency, 10)),
        latency_p90_ms=float(np.percentile(latency, 90)),
        infer_peak_mib=_peak_memory_mib(device, base_rss),
    )

    train_names = [job["train_dataset"]] if job["train_dataset"] else cfg.DATASETS.TRAIN
    dicts = get_detection_dataset_dicts(
        train_names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    batch = cfg.SOLVER.IMS_PER_BATCH
    train_mapper = DatasetMapper(cfg, is_train=True)
    mapped = [train_mapper(d) for d in _cycle(dicts, (warmup + iters) * batch)]
    batches = [mapped[i : i + batch] for i in range(0, len(mapped), batch)]
    _reset_peak_memory(device)
    result["train_iter_s"] = statistics.median(measure_training(cfg, model, batches, warmup))
    result["train_peak_mib"] = _peak_memory_mib(device, base_rss)
    del model, batches, mapped
    width, height = job["input_size"]
    result["gflops"] = count_gflops(cfg, job["num_proposals"], width, height)
    return result


# ------------------------------------------------------------------------------------------
# Parent: one subprocess per model, then the table.


def measure_in_subprocess(job: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="benchmark-") as tmp:
        result_file = os.path.join(tmp, "result.json")
        job = dict(job, output_dir=tmp)  # the worker's OUTPUT_DIR (config dump, log)
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job), result_file],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0 or not os.path.exists(result_file):
            raise RuntimeError(
                f"benchmark of {job['config']!r} failed (exit {proc.returncode}):\n"
                + proc.stdout[-4000:]
            )
        with open(result_file) as f:
            return json.load(f)


def add_ratios(results: list):
    """Adds to each result "ratios": every column divided by the first result's."""
    reference = results[0]
    for r in results:
        r["ratios"] = {k: (r[k] / reference[k] if reference[k] else None) for k in COLUMNS}


def markdown_table(results: list) -> str:
    """One row per model; every figure but the latency spread and the RoI counts followed by its
    ratio to the first."""

    def cell(r, key, fmt):
        ratio = r["ratios"][key]
        return fmt.format(r[key]) + (f" ({ratio:.2f}x)" if ratio is not None else "")

    table = {
        "model": lambda r: r["name"],
        "params (M)": lambda r: cell(r, "params_m", "{:.2f}"),
        "GFLOPs": lambda r: cell(r, "gflops", "{:.4g}"),
        "latency (ms)": lambda r: cell(r, "latency_ms", "{:.1f}"),
        "p10-p90 (ms)": lambda r: f"{r['latency_p10_ms']:.1f}-{r['latency_p90_ms']:.1f}",
        "train (s/iter)": lambda r: cell(r, "train_iter_s", "{:.3f}"),
        "inference peak (MiB)": lambda r: cell(r, "infer_peak_mib", "{:.0f}"),
        "training peak (MiB)": lambda r: cell(r, "train_peak_mib", "{:.0f}"),
        "RoIs per image, per head": lambda r: ", ".join(
            f"{name} {n:.1f}" for name, n in r["head_rois_per_image"].items()
        ),
    }
    lines = ["| " + " | ".join(table) + " |", "|" + " --- |" * len(table)]
    lines += ["| " + " | ".join(f(r) for f in table.values()) + " |" for r in results]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        job_json, result_file = args.worker
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        result = run_worker(json.loads(job_json))
        with open(result_file, "w") as f:
            json.dump(result, f)
        return None

    weights = [w if w.lower() != "none" else "" for w in args.weights] or [""] * len(args.configs)
    names = args.names or [default_name(c) for c in args.configs]
    settings = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "input_size": args.input_size,
        "num_proposals": args.num_proposals,
        "iters": args.iters,
        "warmup": args.warmup,
        "dataset": args.dataset,
        "train_dataset": args.train_dataset,
        "opts": args.opts,
    }
    results = []
    for config, weight, name in zip(args.configs, weights, names):
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        job = dict(settings, config=config, weights=weight)
        results.append(dict(name=name, config=config, weights=weight, **measure_in_subprocess(job)))
    add_ratios(results)
    width, height = args.input_size
    print(
        f"{settings['device_name']}, {settings['cpu_threads']} CPU threads; "
        f"input {width}x{height}, {args.num_proposals} proposals; "
        f"{args.iters} timed images / iterations after {args.warmup} warm-up; "
        f"ratios to {names[0]}\n"
    )
    table = markdown_table(results)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"settings": settings, "columns": COLUMNS, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
