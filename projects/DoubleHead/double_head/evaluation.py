"""
Evaluation of several Double-Head inference modes in one pass over a dataset (Fig. 6): backbone,
RPN and both heads run once per image, and each mode's detections go to an evaluator of its own.

Shape shorthand:

    N: number of images in a batch (of the model's inputs and of its outputs)
"""

import logging
import os
from collections import OrderedDict
from typing import Callable, List, Sequence, Tuple

from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import GeneralizedRCNN
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detcommon.inference import features_and_proposals

__all__ = ["MultiModeInference", "MultiModeEvaluator", "multi_mode_evaluation"]

logger = logging.getLogger(__name__)


class MultiModeInference(nn.Module):
    """
    Wraps a GeneralizedRCNN whose RoI heads are :class:`DoubleHeadROIHeads`. Its forward takes
    the model's N inputs and returns, per image (N in all), {"instances_by_mode": {mode:
    Instances}}, each Instances in the input image's size, as the model's own outputs are.
    """

    def __init__(self, model: nn.Module, modes: Sequence[str]):
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        if not hasattr(model.roi_heads, "predict_modes"):
            raise ValueError(
                "MODEL.DOUBLE_HEAD.EVAL_MODES needs MODEL.ROI_HEADS.NAME 'DoubleHeadROIHeads', "
                f"got {type(model.roi_heads).__name__}"
            )
        self.model = model
        self.modes = list(modes)

    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        model = self.model
        images, features, proposals = features_and_proposals(model, batched_inputs)
        by_mode = model.roi_heads.predict_modes(features, proposals, self.modes)
        outputs = [{"instances_by_mode": {}} for _ in batched_inputs]
        for mode, results in by_mode.items():
            resized = GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
            for output, r in zip(outputs, resized):
                output["instances_by_mode"][mode] = r["instances"]
        return outputs


class MultiModeEvaluator(DatasetEvaluator):
    """
    Gives each mode's detections of :class:`MultiModeInference` to that mode's evaluator. Its
    results are those of every evaluator, the task names prefixed by the mode ("fused/bbox").
    """

    def __init__(self, build_evaluator: Callable[[str], DatasetEvaluator], modes: Sequence[str]):
        """
        Args:
            build_evaluator (Callable[[str], DatasetEvaluator]): mode -> evaluator of the usual
                {"instances": Instances} outputs. Called at the first :meth:`reset`, once the
                test data loader exists: a COCOEvaluator reads the dataset's json file as it is
                built.
            modes (Sequence[str]): the modes to evaluate.
        """
        self._build_evaluator = build_evaluator
        self._modes = list(modes)
        self._evaluators = None

    def reset(self):
        if self._evaluators is None:
            self._evaluators = {mode: self._build_evaluator(mode) for mode in self._modes}
        for evaluator in self._evaluators.values():
            evaluator.reset()

    def process(self, inputs, outputs):
        for mode, evaluator in self._evaluators.items():
            evaluator.process(
                inputs, [{"instances": o["instances_by_mode"][mode]} for o in outputs]
            )

    def evaluate(self):
        results = OrderedDict()
        for mode, evaluator in self._evaluators.items():
            logger.info(f"Double-Head inference mode {mode!r}:")
            for task, metrics in (evaluator.evaluate() or {}).items():
                results[f"{mode}/{task}"] = metrics
        return results


def multi_mode_evaluation(
    cfg, model: nn.Module, build_evaluator: Callable
) -> Tuple[MultiModeInference, List[MultiModeEvaluator]]:
    """
    The model and evaluators with which `DefaultTrainer.test(cfg, model, evaluators)` evaluates
    every mode of MODEL.DOUBLE_HEAD.EVAL_MODES on every dataset of DATASETS.TEST.

    Args:
        build_evaluator (Callable): (cfg, dataset_name, output_folder) -> evaluator, e.g.
            `Trainer.build_evaluator`; each mode writes to OUTPUT_DIR/inference/<dataset>/<mode>.
    """
    modes = cfg.MODEL.DOUBLE_HEAD.EVAL_MODES
    evaluators = [
        MultiModeEvaluator(
            lambda mode, dataset=dataset: build_evaluator(
                cfg, dataset, os.path.join(cfg.OUTPUT_DIR, "inference", dataset, mode)
            ),
            modes,
        )
        for dataset in cfg.DATASETS.TEST
    ]
    return MultiModeInference(model, modes), evaluators
