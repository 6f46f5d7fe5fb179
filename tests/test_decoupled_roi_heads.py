"""DecoupledROIHeads on hand-built features and proposals: losses, detached cascade, inference."""

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_roi_heads
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

import decoupled_rcnn.roi_heads as roi_heads_module
from decoupled_rcnn import add_decoupled_rcnn_config
from decoupled_rcnn.rpn import REG_SET_FIELD

IMAGE_SIZE = (128, 128)
NUM_CLASSES = 3
CASCADE_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
INPUT_SHAPE = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}


def _cfg(num_stages=3):
    cfg = get_cfg()
    add_decoupled_rcnn_config(cfg)
    cfg.MODEL.ROI_HEADS.NAME = "DecoupledROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3"]
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
    d = cfg.MODEL.DECOUPLED
    d.REG_BATCH_SIZE_PER_IMAGE = 16
    d.NUM_REG_STAGES = num_stages
    d.REG_STAGE_BBOX_REG_WEIGHTS = CASCADE_WEIGHTS[:num_stages]
    d.REG_STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)[:num_stages]
    d.REG_LOSS_LAMBDA = 0.5
    return cfg


def _build(cfg):
    torch.manual_seed(0)
    return build_roi_heads(cfg, INPUT_SHAPE)


def _features(num_images):
    torch.manual_seed(1)
    return {"p2": torch.randn(num_images, 8, 32, 32), "p3": torch.randn(num_images, 8, 16, 16)}


def _targets(boxes, classes):
    t = Instances(IMAGE_SIZE)
    t.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    t.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return t


def _packed_proposals(cls_boxes, reg_boxes):
    """One image's training proposals in DecoupledRPN's packed format."""
    p = Instances(IMAGE_SIZE)
    boxes = torch.tensor(cls_boxes + reg_boxes, dtype=torch.float32).reshape(-1, 4)
    p.proposal_boxes = Boxes(boxes)
    p.objectness_logits = torch.zeros(len(boxes))
    p.set(REG_SET_FIELD, torch.arange(len(boxes)) >= len(cls_boxes))
    return p


def _constant_output(layer, bias):
    """Makes a linear layer output ``bias`` for every input."""
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))


GT = [[20.0, 20.0, 60.0, 60.0], [70.0, 60.0, 120.0, 110.0]]
PROPOSALS = [[22.0, 18.0, 58.0, 62.0], [0.0, 0.0, 30.0, 30.0], [72.0, 62.0, 118.0, 112.0]]


def test_losses_names_weights_and_gradients():
    heads = _build(_cfg()).train()
    proposals = [_packed_proposals(PROPOSALS, PROPOSALS)]
    with EventStorage():
        losses = heads(None, _features(1), proposals, [_targets(GT, [0, 2])])[1]
    assert set(losses) == {"loss_cls", "loss_box_reg_s1", "loss_box_reg_s2", "loss_box_reg_s3"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in heads.parameters())

    # Eq. 8: each stage's loss is lambda * w_k * L_k; doubling lambda doubles every stage.
    cfg = _cfg()
    cfg.MODEL.DECOUPLED.REG_LOSS_LAMBDA = 1.0
    heads = _build(cfg).train()
    torch.manual_seed(2)
    with EventStorage():
        doubled = heads(None, _features(1), proposals, [_targets(GT, [0, 2])])[1]
    for k in (1, 2, 3):
        key = f"loss_box_reg_s{k}"
        assert torch.allclose(doubled[key], 2 * losses[key])


def test_zero_positive_images_give_zero_connected_loss():
    heads = _build(_cfg()).train()
    proposals = [_packed_proposals(PROPOSALS, PROPOSALS), _packed_proposals(PROPOSALS, [])]
    targets = [_targets([], []), _targets([], [])]
    with EventStorage():
        losses = heads(None, _features(2), proposals, targets)[1]
    for k in (1, 2, 3):
        loss = losses[f"loss_box_reg_s{k}"]
        assert loss.item() == 0.0 and loss.requires_grad
    assert torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()
    # Every regression parameter is in the graph (as DDP needs), with a zero gradient.
    for p in list(heads.reg_heads.parameters()) + list(heads.reg_predictors.parameters()):
        assert p.grad is not None and not p.grad.any()


def test_one_image_without_positives_does_not_change_the_other():
    heads = _build(_cfg(num_stages=1)).train()
    with EventStorage():
        torch.manual_seed(3)
        alone = heads(
            None, _features(1), [_packed_proposals(PROPOSALS, PROPOSALS)], [_targets(GT, [0, 2])]
        )[1]["loss_box_reg_s1"]
        torch.manual_seed(3)
        both = heads(
            None,
            {k: torch.cat([v, v]) for k, v in _features(1).items()},
            [_packed_proposals(PROPOSALS, PROPOSALS), _packed_proposals(PROPOSALS, PROPOSALS)],
            [_targets(GT, [0, 2]), _targets([], [])],
        )[1]["loss_box_reg_s1"]
    # Normalised by the number of sampled regression RoIs: the empty image adds none.
    assert torch.allclose(alone, both)


def test_regression_sample_is_positive_only_and_capped(monkeypatch):
    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.REG_BATCH_SIZE_PER_IMAGE = 3
    heads = _build(cfg).train()
    seen = []

    def spy(proposals, *args, **kwargs):
        sampled = sample(proposals, *args, **kwargs)
        seen.append(sampled)
        return sampled

    sample = roi_heads_module.sample_regression_proposals
    monkeypatch.setattr(roi_heads_module, "sample_regression_proposals", spy)
    jittered = [[20.0 + d, 20.0 - d, 60.0 + d, 60.0] for d in range(8)]
    negatives = [[0.0, 0.0, 30.0, 30.0], [60.0, 0.0, 127.0, 40.0]]
    proposals = [_packed_proposals(PROPOSALS, jittered + negatives)]
    with EventStorage():
        heads(None, _features(1), proposals, [_targets(GT, [0, 2])])
    (sampled,) = seen[0]
    assert len(sampled) == 3  # 8 jittered boxes + 2 GT boxes are positive; capped at 3
    ious = pairwise_iou(sampled.proposal_boxes, sampled.gt_boxes).diagonal()
    assert (ious >= 0.5).all()


def test_later_stages_train_on_detached_refined_boxes(monkeypatch):
    heads = _build(_cfg(num_stages=2)).train()
    # Stage 1 shifts every box right by 0.1 of its width (dx = 1 at weight 10), for every class.
    _constant_output(heads.reg_predictors[0], [1.0, 0.0, 0.0, 0.0] * NUM_CLASSES)
    inputs = []

    def spy(proposals, *args, **kwargs):
        inputs.append(proposals)
        return sample(proposals, *args, **kwargs)

    sample = roi_heads_module.sample_regression_proposals
    monkeypatch.setattr(roi_heads_module, "sample_regression_proposals", spy)
    # The regression set is the first GT box only (GT boxes are appended as proposals too).
    proposals = [_packed_proposals(PROPOSALS, [GT[0]])]
    with EventStorage():
        losses = heads(None, _features(1), proposals, [_targets(GT[:1], [1])])[1]
    stage2_boxes = inputs[1][0].proposal_boxes.tensor
    assert not stage2_boxes.requires_grad
    expected = torch.tensor([[24.0, 20.0, 64.0, 60.0]] * 2)  # GT as proposal and appended GT
    assert torch.allclose(stage2_boxes, expected)

    losses["loss_box_reg_s2"].backward()
    # No gradient reaches stage 1 through the boxes it regressed.
    assert all(p.grad is None for p in heads.reg_predictors[0].parameters())
    assert all(p.grad is None for p in heads.reg_heads[0].parameters())
    assert all(p.grad is not None for p in heads.reg_predictors[1].parameters())


def test_regressors_fit_fixed_rois():
    heads = _build(_cfg()).train()
    features = [_features(1)[f] for f in heads.box_in_features]
    generator = torch.Generator().manual_seed(0)
    boxes = torch.tensor(GT).repeat(8, 1)
    boxes += (
        0.1 * (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2) * torch.randn(16, 4, generator=generator)
    )
    proposals = [Instances(IMAGE_SIZE, proposal_boxes=Boxes(boxes))]
    targets = [_targets(GT, [0, 2])]
    optimizer = torch.optim.SGD(heads.parameters(), lr=0.02, momentum=0.9)
    history = []
    with EventStorage():
        for _ in range(50):
            losses = heads._regression_losses(features, proposals, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            history.append(losses)
    for key in history[0]:
        assert history[-1][key] < 0.3 * history[0][key], key


def _expected_refinement(boxes, stage_deltas, stages):
    from detectron2.modeling.box_regression import Box2BoxTransform

    boxes = torch.tensor(boxes)
    for weights, deltas in list(zip(CASCADE_WEIGHTS, stage_deltas))[:stages]:
        boxes = Box2BoxTransform(weights).apply_deltas(torch.tensor([deltas] * len(boxes)), boxes)
        boxes = boxes.clamp(min=0, max=IMAGE_SIZE[0])
    return boxes


@pytest.mark.parametrize("test_stage", [0, 1, 2])
def test_inference_applies_every_stage_in_order(test_stage):
    cfg = _cfg()
    cfg.MODEL.DECOUPLED.TEST_STAGE = test_stage
    heads = _build(cfg).eval()
    predicted_class = 1
    cls_bias = torch.zeros(NUM_CLASSES + 1)
    cls_bias[predicted_class] = 5.0
    _constant_output(heads.box_predictor, cls_bias)
    # Stage 1 is class-specific: only the predicted class's deltas (0.5, 0.2, 0.1, -0.2) apply.
    stage1 = torch.full((NUM_CLASSES, 4), 3.0)
    stage1[predicted_class] = torch.tensor([0.5, 0.2, 0.1, -0.2])
    _constant_output(heads.reg_predictors[0], stage1.flatten())
    # The later stages' deltas do not commute with stage 1's (dx is relative to the width).
    stage_deltas = [stage1[predicted_class].tolist(), [0.0, 0.0, 2.0, 0.0], [-3.0, 1.0, 0.0, 0.0]]
    for k in (1, 2):
        _constant_output(heads.reg_predictors[k], stage_deltas[k])

    boxes = [[10.0, 10.0, 40.0, 40.0], [70.0, 60.0, 110.0, 100.0]]
    proposals = Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.tensor(boxes)))
    with torch.no_grad():
        (result,) = heads(None, _features(1), [proposals])[0]

    assert result.pred_classes.tolist() == [predicted_class] * 2
    expected = _expected_refinement(boxes, stage_deltas, test_stage or 3)
    got = result.pred_boxes.tensor[result.pred_boxes.tensor[:, 0].argsort()]
    assert torch.allclose(got, expected, atol=1e-4)


def test_batch_size_normalizer_divides_by_the_padded_sample():
    """REG_LOSS_NORMALIZER batch_size: sum / (REG_BATCH_SIZE_PER_IMAGE x images), as the authors'
    zero-padded sample; num_samples: sum / sampled positives."""
    losses = {}
    for normalizer in ("num_samples", "batch_size"):
        cfg = _cfg(num_stages=1)
        cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = normalizer
        heads = _build(cfg).train()
        with EventStorage() as storage:
            torch.manual_seed(3)
            losses[normalizer] = heads(
                None, _features(1), [_packed_proposals(PROPOSALS, PROPOSALS)], [_targets(GT, [0, 2])]
            )[1]["loss_box_reg_s1"]
            num_positives = storage.history("decoupled/num_reg_samples_s1").latest()
    # Two proposals and both ground-truth boxes reach IoU 0.5; the cap is 16 RoIs per image.
    assert num_positives == 4
    assert torch.allclose(losses["batch_size"], losses["num_samples"] * num_positives / 16)
    with pytest.raises(ValueError, match="MODEL.DECOUPLED.REG_LOSS_NORMALIZER"):
        cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "mean"
        _build(cfg)


def test_fast_path_gives_the_full_paths_detections_on_fewer_rois():
    """FAST_PATH regresses only proposals whose best foreground score reaches the test threshold;
    the detections (boxes, scores, classes) equal those of regressing every proposal."""
    heads = _build(_cfg()).eval()
    torch.manual_seed(4)
    with torch.no_grad():  # spread the scores so that the threshold splits the proposals
        heads.box_predictor.weight.normal_(std=0.5)
    xy = torch.rand(2, 40, 2) * 90
    wh = torch.rand(2, 40, 2) * 30 + 8
    proposals = [Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.cat([b[0], b[0] + b[1]], 1)))
                 for b in zip(xy, wh)]
    seen = []
    heads.reg_heads[0].register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))
    results = {}
    with torch.no_grad():
        features = _features(2)
        scores = torch.softmax(heads._classify(heads.box_pooler(
            [features[f] for f in heads.box_in_features], [p.proposal_boxes for p in proposals])), -1)
        heads.test_score_thresh = float(scores[:, :-1].max(1).values.median())
        for fast in (False, True):
            heads.fast_path = fast
            results[fast] = heads(None, features, proposals)[0]
    assert seen[0] == 80 and 0 < seen[1] < 80
    for full, fast in zip(results[False], results[True]):
        assert len(full) > 0
        assert torch.equal(full.pred_classes, fast.pred_classes)
        assert torch.equal(full.scores, fast.scores)
        assert torch.allclose(full.pred_boxes.tensor, fast.pred_boxes.tensor, atol=1e-5)
