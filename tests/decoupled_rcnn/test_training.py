"""End to end on the embedded shapes dataset: training lowers the loss; checkpoint -> predictor."""

import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from decoupled_rcnn import add_decoupled_rcnn_config
from tests.conftest import REPO

NUM_ITERS = 20


@pytest.fixture(scope="module")
def cfg():
    import detcommon  # registers shapes_train and shapes_val

    cfg = get_cfg()
    detcommon.add_common_config(cfg)
    add_decoupled_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "shapes", "drcnn_cascade.yaml"))
    # A CPU-sized version of the shapes model: thin FPN and trunks, small images, few RoIs.
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.FPN.OUT_CHANNELS", "32",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "MODEL.DECOUPLED.REG_BATCH_SIZE_PER_IMAGE", "32",
            "INPUT.MIN_SIZE_TRAIN", "(128,)",
            "INPUT.MAX_SIZE_TRAIN", "160",
            "INPUT.MIN_SIZE_TEST", "128",
            "INPUT.MAX_SIZE_TEST", "160",
            "TEST.DETECTIONS_PER_IMAGE", "20",
            "SOLVER.IMS_PER_BATCH", "2",
            "DATALOADER.NUM_WORKERS", "0",
        ]
    )  # fmt: skip
    return cfg


@pytest.fixture(scope="module")
def trained(cfg):
    """The model after NUM_ITERS SGD steps on one shapes batch, and its per-step losses."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(build_detection_train_loader(cfg)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = []
    with EventStorage():
        for _ in range(NUM_ITERS):
            losses = model(batch)
            assert all(torch.isfinite(v) for v in losses.values()), losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            history.append({k: v.item() for k, v in losses.items()})
    return model, history


@pytest.mark.slow
def test_a_few_iterations_on_shapes_lower_the_loss(trained):
    history = trained[1]
    assert {"loss_cls", "loss_box_reg_s1", "loss_box_reg_s2", "loss_box_reg_s3"} <= set(history[0])

    def mean(key, steps):
        return sum(h[key] if key else sum(h.values()) for h in steps) / len(steps)

    first, last = history[:3], history[-3:]
    assert mean(None, last) < mean(None, first)
    assert mean("loss_rpn_cls", last) < mean("loss_rpn_cls", first)
    assert mean("loss_cls", last) < 0.8 * mean("loss_cls", first)
    # The regression losses alone are not compared: their sample changes as the RPN learns (at
    # first mostly the ground-truth boxes themselves, with zero loss). See
    # test_regressors_fit_fixed_rois in test_roi_heads.py for their learning.


@pytest.mark.slow
def test_checkpoint_to_default_predictor(cfg, trained, tmp_path):
    model = trained[0]
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final")
    cfg = cfg.clone()
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # detections to compare, however briefly trained
    predictor = DefaultPredictor(cfg)
    for name, value in model.state_dict().items():
        assert torch.equal(predictor.model.state_dict()[name], value), name

    from detectron2.data import DatasetCatalog

    record = DatasetCatalog.get("shapes_val")[0]
    image = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
    instances = predictor(image)["instances"]
    assert 0 < len(instances) <= cfg.TEST.DETECTIONS_PER_IMAGE

    # The same weights, run by hand on the predictor's input, give the same detections.
    model.eval()
    resized = predictor.aug.get_transform(image).apply_image(image)
    inputs = {
        "image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
        "height": image.shape[0],
        "width": image.shape[1],
    }
    thresh, model.roi_heads.test_score_thresh = model.roi_heads.test_score_thresh, 0.0
    with torch.no_grad():
        expected = model([inputs])[0]["instances"]
    model.roi_heads.test_score_thresh = thresh
    assert torch.allclose(instances.pred_boxes.tensor, expected.pred_boxes.tensor)
    assert torch.equal(instances.scores, expected.scores)
    assert torch.equal(instances.pred_classes, expected.pred_classes)
