"""Batched inference with DefaultPredictor's preprocessing (`tools/demo.py --batch-size N`)."""

import math
from typing import Dict, List

import numpy as np
import torch
from detectron2.engine import DefaultPredictor

__all__ = ["BatchPredictor"]


class BatchPredictor(DefaultPredictor):
    """
    DefaultPredictor for a list of images: the same model, weights (MODEL.WEIGHTS), resize
    (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST) and input format (INPUT.FORMAT), in eval mode
    without gradients, running up to `batch_size` images through each forward.

    Only images that the model pads to the same size share a forward: padding an image further,
    to a larger one's size, changes its detections (GroupNorm statistics, RPN anchors beyond the
    image), so each image gets DefaultPredictor's detections up to float rounding.
    """

    def __init__(self, cfg, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(cfg)
        self.batch_size = batch_size

    def __call__(self, original_images: List[np.ndarray]) -> List[Dict]:
        """
        Args:
            original_images: images of shape (H, W, C) in BGR order, as cv2.imread gives.

        Returns:
            the model's output for each image, in order (see DefaultPredictor).
        """
        if isinstance(original_images, np.ndarray):
            raise TypeError(
                "BatchPredictor takes a list of images: pass [image] for one (DefaultPredictor takes one)"
            )
        with torch.no_grad():
            inputs = [self._preprocess(image) for image in original_images]
            outputs = [None] * len(inputs)
            for batch in self._batches(inputs):
                for i, output in zip(batch, self.model([inputs[i] for i in batch])):
                    outputs[i] = output
            return outputs

    def _preprocess(self, original_image: np.ndarray) -> Dict:
        """DefaultPredictor's model input for one image."""
        if self.input_format == "RGB":
            original_image = original_image[:, :, ::-1]
        height, width = original_image.shape[:2]
        image = self.aug.get_transform(original_image).apply_image(original_image)
        image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
        return {"image": image, "height": height, "width": width}

    def _batches(self, inputs: List[Dict]) -> List[List[int]]:
        """Indices of `inputs` in batches of at most batch_size images of the same padded size."""
        divisor = max(self.model.backbone.size_divisibility, 1)
        groups = {}
        for i, x in enumerate(inputs):
            padded = tuple(math.ceil(s / divisor) * divisor for s in x["image"].shape[-2:])
            groups.setdefault(padded, []).append(i)
        return [
            g[k : k + self.batch_size]
            for g in groups.values()
            for k in range(0, len(g), self.batch_size)
        ]
