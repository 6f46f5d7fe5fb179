"""
Spatial sensitivity of the two kinds of heads (Double-Head, Fig. 4 and Appendix Fig. 8).

- fc-head: the first fc layer's weight (D, C*H*W) holds one (D, C) slice per RoI cell; the
  Pearson correlation of two cells' flattened slices says how alike the layer treats them.
- conv-head: on real RoIs, the correlation between the C-dim feature vectors of the H*W
  positions of the head's last block (before average pooling), averaged over RoIs.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import tqdm
from torch import nn

from ..inference import features_and_proposals
from .heads import conv_heads, describe_heads, fc_heads, predict_heads
from .proposals import load_test_image

__all__ = [
    "fc_weight_correlation",
    "feature_map_correlation",
    "distance_profile",
    "fc_sensitivity",
    "conv_sensitivity",
]


def fc_weight_correlation(fc: nn.Linear, resolution: Tuple[int, int]) -> np.ndarray:
    """
    Args:
        fc: a layer on flattened (C, H, W) features, weight (D, C*H*W).
        resolution: (H, W).

    Returns:
        (H*W, H*W) Pearson correlations between the cells' flattened (D, C) weight slices.
    """
    cells = resolution[0] * resolution[1]
    weight = fc.weight.detach().cpu().double()
    if weight.shape[1] % cells:
        raise ValueError(
            f"The fc layer's {weight.shape[1]} inputs are not C x {resolution[0]} x {resolution[1]}"
        )
    slices = weight.view(weight.shape[0], -1, cells).permute(2, 0, 1).reshape(cells, -1)
    return np.corrcoef(slices.numpy())


def feature_map_correlation(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        features: (R, C, H, W) feature maps.

    Returns:
        sum over RoIs of the (H*W, H*W) correlation between positions (Pearson over the C
        channels), and per pair the number of RoIs where it is defined (both vectors not
        constant); their ratio is the mean.
    """
    x = features.flatten(2).double()  # (R, C, N)
    x = x - x.mean(dim=1, keepdim=True)
    norm = x.norm(dim=1)  # (R, N)
    valid = norm > 0
    x = x / norm.clamp(min=1e-12)[:, None]
    correlation = torch.einsum("rcn,rcm->rnm", x, x)  # (R, N, N)
    pairs = (valid[:, :, None] & valid[:, None, :]).double()
    return (correlation * pairs).sum(0), pairs.sum(0)


def distance_profile(matrix: np.ndarray, resolution: Tuple[int, int]) -> Dict[str, float]:
    """Mean correlation of two different cells per Chebyshev distance between them
    ("1" = neighbours), and over all pairs of different cells ("all")."""
    rows, cols = np.divmod(np.arange(resolution[0] * resolution[1]), resolution[1])
    distance = np.maximum(
        np.abs(rows[:, None] - rows[None, :]), np.abs(cols[:, None] - cols[None, :])
    )
    profile = {
        str(d): float(np.nanmean(matrix[distance == d])) for d in range(1, distance.max() + 1)
    }
    profile["all"] = float(np.nanmean(matrix[distance > 0]))
    return profile


def _select(roi_heads, heads: Dict[str, nn.Module], name: Optional[str], kind: str):
    """`heads`, or only the one called `name`; ValueError naming what the model has instead."""
    if not heads:
        raise ValueError(f"The model has no {kind}: its RoI heads are {describe_heads(roi_heads)}")
    if name is None:
        return heads
    if name not in heads:
        raise ValueError(
            f"The model has no {kind} named {name!r}; it has {sorted(heads)} "
            f"({describe_heads(roi_heads)})"
        )
    return {name: heads[name]}


class _CorrelationMeter:
    """Forward pre-hook that accumulates :func:`feature_map_correlation` of a module's input."""

    def __init__(self):
        self.total = self.pairs = 0.0
        self.num_rois = 0
        self.resolution = None

    def __call__(self, module, inputs):
        total, pairs = feature_map_correlation(inputs[0])
        self.total, self.pairs = self.total + total, self.pairs + pairs
        self.num_rois += len(inputs[0])
        self.resolution = tuple(inputs[0].shape[2:])


def fc_sensitivity(model, head: Optional[str] = None) -> Dict[str, dict]:
    """
    Correlation maps of the first fc layer of the model's fc-heads (FastRCNNConvFCHead).

    Args:
        head: analyse only this head (a name of :func:`..heads.fc_heads`); None: all of them.

    Returns:
        head -> {"layer": module path, "resolution": (H, W), "matrix": (H*W, H*W),
                 "mean_by_distance": :func:`distance_profile`}.
    """
    roi_heads = model.roi_heads
    heads = _select(
        roi_heads, fc_heads(roi_heads), head, "fc-head (FastRCNNConvFCHead with an fc layer)"
    )
    resolution = tuple(roi_heads.box_pooler.output_size)
    results = {}
    for name, module in heads.items():
        matrix = fc_weight_correlation(module.fcs[0], resolution)
        layer = next(n for n, m in model.named_modules() if m is module.fcs[0])
        results[name] = {
            "layer": layer,
            "resolution": resolution,
            "matrix": matrix,
            "mean_by_distance": distance_profile(matrix, resolution),
        }
    return results


@torch.no_grad()
def conv_sensitivity(
    model,
    cfg,
    dataset_dicts: List[dict],
    rois_per_image: int = 100,
    head: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, dict]:
    """
    Correlation maps of the last block's output of the model's conv-heads (DoubleHeadConvHead)
    on real RoIs: the RPN's top `rois_per_image` test proposals of each image, pooled as the
    model pools them (e.g. Double-Head's enlarged RoIs).

    Returns:
        head -> {"resolution": (H, W), "matrix": (H*W, H*W), "num_rois": R,
                 "mean_by_distance": :func:`distance_profile`}.
    """
    roi_heads = model.roi_heads
    heads = _select(roi_heads, conv_heads(roi_heads), head, "conv-head (DoubleHeadConvHead)")
    if model.proposal_generator is None:
        raise ValueError("conv-sensitivity takes its RoIs from the model's RPN, which it lacks")
    # The input of a conv-head's average pooling is its last block's (R, C, H, W) output.
    meters = {name: _CorrelationMeter() for name in heads}
    handles = [h.avgpool.register_forward_pre_hook(meters[name]) for name, h in heads.items()]
    try:
        for dataset_dict in tqdm.tqdm(dataset_dicts, desc="images", disable=not progress):
            image = load_test_image(cfg, dataset_dict)[0]
            images, features, (proposals,) = features_and_proposals(
                model, [{"image": image.to(model.device)}]
            )
            boxes = proposals.proposal_boxes.tensor[:rois_per_image]  # sorted by objectness
            classes = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            predict_heads(roi_heads, features, boxes, images.image_sizes[0], classes)
    finally:
        for handle in handles:
            handle.remove()
    results = {}
    for name, meter in meters.items():
        if meter.num_rois == 0:
            raise ValueError("No RoI reached the conv-head: the RPN proposed nothing")
        matrix = (meter.total / meter.pairs).numpy()  # NaN where never defined
        results[name] = {
            "resolution": meter.resolution,
            "matrix": matrix,
            "num_rois": meter.num_rois,
            "mean_by_distance": distance_profile(matrix, meter.resolution),
        }
    return results
