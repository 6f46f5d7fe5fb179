"""
RoI pooling from enlarged boxes, on the FPN level of the original box.

Shape shorthand:

    R: number of RoIs (boxes) of the batch, all images together
    C: number of feature channels
    P: the pooler's output resolution: pooled RoI features are P x P
"""

from typing import List

import torch
from detectron2.layers import nonzero_tuple
from detectron2.modeling.poolers import (
    ROIPooler,
    _create_zeros,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from detectron2.structures import Boxes

__all__ = ["EnlargedROIPooler", "enlarge_boxes"]


def enlarge_boxes(boxes: Boxes, scale: float) -> Boxes:
    """(R, 4) `boxes` scaled by `scale` about their centres; not clipped to the image."""
    centers = boxes.get_centers()  # (R, 2)
    half_sizes = (boxes.tensor[:, 2:] - boxes.tensor[:, :2]) * (scale / 2)
    return Boxes(torch.cat([centers - half_sizes, centers + half_sizes], dim=1))


class EnlargedROIPooler(ROIPooler):
    """
    :class:`ROIPooler` that pools every box enlarged by `scale` about its centre, on the FPN
    level that the ORIGINAL box maps to, without clipping the enlarged box to the image. This is
    the Double-Head authors' ``PoolerNeighbor`` (and MMDetection's ``roi_scale_factor``): a plain
    ROIPooler on enlarged boxes would move about a third of them one level up (log2(1.3) = 0.38).
    ``scale == 1`` pools exactly as :class:`ROIPooler`. Boxes -> (R, C, P, P).
    """

    def __init__(self, *args, scale: float = 1.0, **kwargs):
        """
        Args:
            args, kwargs: as for :class:`ROIPooler`.
            scale (float): enlargement factor of every box about its centre, > 0.
        """
        super().__init__(*args, **kwargs)
        if not scale > 0:
            raise ValueError(f"EnlargedROIPooler: scale must be > 0, got {scale}")
        self.scale = float(scale)

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        if self.scale == 1.0 or len(box_lists) == 0:
            return super().forward(x, box_lists)
        enlarged = [enlarge_boxes(b, self.scale) for b in box_lists]
        if len(self.level_poolers) == 1:
            return super().forward(x, enlarged)
        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        pooler_fmt_boxes = convert_boxes_to_pooler_format(enlarged)  # (R, 5): image index, box
        # as ROIPooler: the number of boxes and the device stay inputs of a traced model
        output = _create_zeros(pooler_fmt_boxes, x[0].shape[1], *self.output_size, x[0])
        for level, pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(levels == level)[0]
            # index_put_ rather than advanced indexing (pytorch/issues/49852), as ROIPooler does
            output.index_put_((inds,), pooler(x[level], pooler_fmt_boxes[inds]))
        return output
