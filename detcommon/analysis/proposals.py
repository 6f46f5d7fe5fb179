"""
Sliding-window proposal analysis of Double-Head (Wu et al., Sec. 3.1, Fig. 2, 3, 7).

Around every ground-truth box of an evaluation set, windows shifted and scaled from it are drawn
so that their IoUs with it fill `num_bins` equal IoU bins between 0 and 1 evenly. Each head of a
trained model then scores every window for the box's class and regresses it with that class's
deltas; :mod:`.iou_statistics` turns these into per-bin curves and correlations.
"""

import functools
import logging
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch
import tqdm
from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    detection_utils,
)
from detectron2.data import transforms as T
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, BoxMode
from detectron2.structures.boxes import matched_pairwise_iou

from detcommon import PaperCOCOEvaluator
from detcommon.inference import features_and_proposals

from .heads import predict_heads

__all__ = [
    "NUM_BINS",
    "iou_bins",
    "sliding_window_proposals",
    "ProposalRecords",
    "load_test_image",
    "collect_proposal_records",
    "evaluate_class_ap",
]

logger = logging.getLogger(__name__)

NUM_BINS = 20  # the paper's IoU bins: [0, 0.05), [0.05, 0.1), ..., [0.95, 1]
# Window spreads (std of the shift, in box widths/heights, and of the log-scale) are drawn
# log-uniformly from this range: the small ones fill the high-IoU bins, the large ones IoU 0.
_SPREAD_RANGE = (0.002, 2.0)


def iou_bins(ious: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """(N,) IoUs in [0, 1] -> (N,) bin index in [0, num_bins); bin b holds [b, b + 1) / num_bins,
    the last one also IoU 1."""
    ious = np.asarray(ious, dtype=np.float64)
    return np.minimum((ious * num_bins).astype(np.int64), num_bins - 1)


def sliding_window_proposals(
    gt_boxes: torch.Tensor,
    image_size: Tuple[int, int],
    per_box: int,
    generator: torch.Generator,
    num_bins: int = NUM_BINS,
    max_rounds: int = 50,
) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """
    Windows around each ground-truth box whose IoUs with it fill the IoU bins evenly: every
    round draws shifted and scaled copies of the boxes whose bins still miss windows and keeps,
    per box and bin, only as many as the bin still needs (rejection balancing).

    Args:
        gt_boxes: (G, 4) XYXY boxes.
        image_size: (h, w); windows are clipped to the image, empty ones dropped.
        per_box: windows per box, `per_box // num_bins` (at least 1) per bin.
        generator: the random stream (seed it for reproducible windows).
        max_rounds: rounds after which a bin that is still short stays short (logged).

    Returns:
        boxes (P, 4) float32, gt_index (P,) int64 (row of `gt_boxes`), ious (P,) float32 (IoU of
        each window with its box), ordered by box.
    """
    num_gt = len(gt_boxes)
    quota = max(per_box // num_bins, 1)
    need = torch.full((num_gt * num_bins,), quota, dtype=torch.int64)  # (box, bin), flattened
    draws = max(4 * quota * num_bins, 256)  # windows drawn per box and round
    gt_boxes = gt_boxes.to(torch.float32).cpu()
    centers, sizes = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2, gt_boxes[:, 2:] - gt_boxes[:, :2]
    log_lo, log_hi = np.log(_SPREAD_RANGE)
    kept = []
    for _ in range(max_rounds):
        active = torch.nonzero(need.view(num_gt, num_bins).sum(1) > 0)[:, 0]  # (A,)
        if len(active) == 0:
            break
        shape = (len(active), draws, 1)
        spread = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, generator=generator))
        shifts = torch.randn((*shape[:2], 2), generator=generator) * spread
        scales = torch.exp(torch.randn((*shape[:2], 2), generator=generator) * spread)
        half = sizes[active, None] * scales / 2
        center = centers[active, None] + shifts * sizes[active, None]
        windows = Boxes(torch.cat([center - half, center + half], dim=-1).view(-1, 4))
        windows.clip(image_size)
        gt_index = active[:, None].expand(-1, draws).reshape(-1)
        ious = matched_pairwise_iou(windows, Boxes(gt_boxes[gt_index]))
        key = gt_index * num_bins + torch.from_numpy(iou_bins(ious.numpy(), num_bins))
        key[~windows.nonempty()] = -1
        # Keep the first need[key] windows of each key (the draws are already in random order).
        order = torch.argsort(key, stable=True)
        sorted_key = key[order]
        rank = torch.arange(len(order)) - torch.searchsorted(sorted_key, sorted_key)
        take = order[(sorted_key >= 0) & (rank < need[sorted_key.clamp(min=0)])]
        need -= torch.bincount(key[take], minlength=len(need))
        kept.append((windows.tensor[take], gt_index[take], ious[take]))
    else:
        if need.any():
            logger.warning(
                f"{int((need > 0).sum())} (box, IoU bin) pairs got fewer than {quota} windows "
                f"after {max_rounds} rounds ({int(need.sum())} windows missing)"
            )
    boxes, gt_index, ious = (torch.cat(parts) for parts in zip(*kept)) if kept else _empty()
    order = torch.argsort(gt_index, stable=True)
    return boxes[order], gt_index[order], ious[order].numpy()


def _empty():
    return torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64), torch.zeros((0,))


@dataclass
class ProposalRecords:
    """
    Everything measured on the windows of a dataset: P windows around G ground-truth boxes.
    A head without a classifier (regressor) has no entry in `scores` (`reg_ious`).
    """

    proposal_iou: np.ndarray  # (P,) IoU of the window with its ground-truth box
    gt_index: np.ndarray  # (P,) the window's ground-truth box, in [0, G)
    gt_class: np.ndarray  # (G,) contiguous class id
    gt_area: np.ndarray  # (G,) annotation "area" or box area (original image): COCO size groups
    scores: Dict[str, np.ndarray]  # head -> (P,) probability of the box's class
    reg_ious: Dict[str, np.ndarray]  # head -> (P,) IoU of the regressed window with the box


def load_test_image(
    cfg, dataset_dict: dict
) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """
    An evaluation image resized as at test time (DefaultPredictor's ResizeShortestEdge) and its
    non-crowd ground truth.

    Returns:
        image (3, H, W) float in cfg.INPUT.FORMAT, gt_boxes (G, 4) XYXY in the resized image,
        gt_classes (G,), gt_areas (G,) in the original image (box area when "area" is absent).
    """
    image = detection_utils.read_image(dataset_dict["file_name"], format=cfg.INPUT.FORMAT)
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    transform = resize.get_transform(image)
    annotations = [a for a in dataset_dict.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations],
        dtype=np.float32,
    ).reshape(-1, 4)
    areas = np.array(
        [a.get("area", (b[2] - b[0]) * (b[3] - b[1])) for a, b in zip(annotations, boxes)],
        dtype=np.float64,
    )
    classes = np.array([a["category_id"] for a in annotations], dtype=np.int64)
    image = transform.apply_image(image)
    boxes = transform.apply_box(boxes).astype(np.float32)
    image = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32))
    return image, torch.from_numpy(boxes), classes, areas


@torch.no_grad()
def collect_proposal_records(
    model,
    cfg,
    dataset_dicts: List[dict],
    per_box: int,
    batch_size: int = 1024,
    seed: int = 0,
    num_bins: int = NUM_BINS,
    progress: bool = True,
) -> ProposalRecords:
    """
    Run every head of `model` (a GeneralizedRCNN in eval mode) on sliding windows around each
    ground-truth box of `dataset_dicts`: the backbone once per image, the heads on `batch_size`
    windows at a time.
    """
    roi_heads, device = model.roi_heads, model.device
    generator = torch.Generator().manual_seed(seed)
    ious, gt_index, gt_class, gt_area = [], [], [], []
    scores: Dict[str, list] = {}
    reg_ious: Dict[str, list] = {}
    num_gt = 0
    for dataset_dict in tqdm.tqdm(dataset_dicts, desc="images", disable=not progress):
        image, gt_boxes, classes, areas = load_test_image(cfg, dataset_dict)
        if len(gt_boxes) == 0:
            continue
        images, features, _ = features_and_proposals(
            model, [{"image": image.to(device)}], with_proposals=False
        )
        image_size = images.image_sizes[0]
        windows, index, window_ious = sliding_window_proposals(
            gt_boxes, image_size, per_box, generator, num_bins
        )
        window_classes = torch.from_numpy(classes)[index].to(device)
        matched_gt = Boxes(gt_boxes[index].to(device))
        outputs = [
            predict_heads(roi_heads, features, boxes, image_size, cls)
            for boxes, cls in zip(
                windows.to(device).split(batch_size), window_classes.split(batch_size)
            )
        ]
        for head in outputs[0]:
            head_scores = [o[head].scores for o in outputs]
            if head_scores[0] is not None:
                scores.setdefault(head, []).append(torch.cat(head_scores).cpu().numpy())
            head_boxes = [o[head].boxes for o in outputs]
            if head_boxes[0] is not None:
                iou = matched_pairwise_iou(Boxes(torch.cat(head_boxes)), matched_gt)
                reg_ious.setdefault(head, []).append(iou.cpu().numpy())
        ious.append(window_ious)
        gt_index.append(index.numpy() + num_gt)
        gt_class.append(classes)
        gt_area.append(areas)
        num_gt += len(gt_boxes)
    if num_gt == 0:
        raise ValueError("The evaluation set has no (non-crowd) ground-truth box to analyse")
    return ProposalRecords(
        proposal_iou=np.concatenate(ious),
        gt_index=np.concatenate(gt_index),
        gt_class=np.concatenate(gt_class),
        gt_area=np.concatenate(gt_area),
        scores={h: np.concatenate(v) for h, v in scores.items()},
        reg_ious={h: np.concatenate(v) for h, v in reg_ious.items()},
    )


def evaluate_class_ap(model, cfg, dataset_name: str, dataset_dicts: List[dict]) -> Dict[int, float]:
    """
    Per-class box AP of `model` on `dataset_dicts` (images of `dataset_name`), with the
    project's evaluator, for the class-difficulty groups.

    Returns:
        contiguous class id -> AP (NaN for a class without ground truth).
    """
    loader = build_detection_test_loader(dataset_dicts, mapper=DatasetMapper(cfg, is_train=False))
    evaluator = PaperCOCOEvaluator(dataset_name)
    # COCOEvaluator scores against every image of the dataset unless told which were run.
    image_ids = [d["image_id"] for d in dataset_dicts]
    evaluator.evaluate = functools.partial(evaluator.evaluate, img_ids=image_ids)
    results = inference_on_dataset(model, loader, evaluator)["bbox"]
    names = MetadataCatalog.get(dataset_name).thing_classes
    return {c: results.get(f"AP-{name}", float("nan")) for c, name in enumerate(names)}
