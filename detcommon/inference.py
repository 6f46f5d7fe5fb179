"""GeneralizedRCNN's inference up to the RoI heads, once for every caller that needs the pieces
(several inference modes in one pass, the analyses, the benchmark).

Shape shorthand: N images of a batch.
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.structures import ImageList, Instances
from torch import nn

__all__ = ["features_and_proposals"]


def features_and_proposals(
    model: nn.Module, batched_inputs: List[dict], with_proposals: bool = True
) -> Tuple[ImageList, Dict[str, torch.Tensor], Optional[List[Instances]]]:
    """
    Args:
        model (GeneralizedRCNN): in eval mode.
        batched_inputs (list[dict]): N inputs as the model takes them ("image", and "proposals"
            for a model without a proposal generator).
        with_proposals (bool): False: stop after the backbone.

    Returns:
        tuple[ImageList, dict[str, Tensor], list[Instances] or None]: the preprocessed images,
        the backbone's features, and per image the proposal generator's proposals (those of
        the inputs without one; None without `with_proposals`).
    """
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    if not with_proposals:
        return images, features, None
    if model.proposal_generator is not None:
        proposals, _ = model.proposal_generator(images, features, None)
    else:
        proposals = [x["proposals"].to(model.device) for x in batched_inputs]
    return images, features, proposals
