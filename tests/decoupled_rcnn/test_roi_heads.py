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
from detcommon.poolers import EnlargedROIPooler

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


def test_one_image_without_positives_does_not_change_the_other_with_num_samples():
    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "num_samples"
    heads = _build(cfg).train()
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


@pytest.fixture
def regression_samples(monkeypatch):
    """[(proposals in, sampled out)] of every sample_regression_proposals call (one per stage)."""
    calls = []
    sample = roi_heads_module.sample_regression_proposals

    def spy(proposals, *args, **kwargs):
        sampled = sample(proposals, *args, **kwargs)
        calls.append((proposals, sampled))
        return sampled

    monkeypatch.setattr(roi_heads_module, "sample_regression_proposals", spy)
    return calls


def test_regression_sample_is_positive_only_and_capped(regression_samples):
    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.REG_BATCH_SIZE_PER_IMAGE = 3
    heads = _build(cfg).train()
    jittered = [[20.0 + d, 20.0 - d, 60.0 + d, 60.0] for d in range(8)]
    negatives = [[0.0, 0.0, 30.0, 30.0], [60.0, 0.0, 127.0, 40.0]]
    proposals = [_packed_proposals(PROPOSALS, jittered + negatives)]
    with EventStorage():
        heads(None, _features(1), proposals, [_targets(GT, [0, 2])])
    (sampled,) = regression_samples[0][1]
    assert len(sampled) == 3  # the 8 jittered boxes are positive; capped at 3
    ious = pairwise_iou(sampled.proposal_boxes, sampled.gt_boxes).diagonal()
    assert (ious >= 0.5).all()


def test_later_stages_train_on_detached_refined_boxes(regression_samples):
    heads = _build(_cfg(num_stages=2)).train()
    # Stage 1 shifts every box right by 0.1 of its width (dx = 1 at weight 10), for every class.
    _constant_output(heads.reg_predictors[0], [1.0, 0.0, 0.0, 0.0] * NUM_CLASSES)
    # The regression set is the first GT box only.
    proposals = [_packed_proposals(PROPOSALS, [GT[0]])]
    with EventStorage():
        losses = heads(None, _features(1), proposals, [_targets(GT[:1], [1])])[1]
    stage2_boxes = regression_samples[1][0][0].proposal_boxes.tensor
    assert not stage2_boxes.requires_grad
    assert torch.equal(stage2_boxes, torch.tensor([[24.0, 20.0, 64.0, 60.0]]))

    losses["loss_box_reg_s2"].backward()
    # No gradient reaches stage 1 through the boxes it regressed.
    assert all(p.grad is None for p in heads.reg_predictors[0].parameters())
    assert all(p.grad is None for p in heads.reg_heads[0].parameters())
    assert all(p.grad is not None for p in heads.reg_predictors[1].parameters())


def test_regressors_fit_fixed_rois():
    cfg = _cfg()
    # The fixed divisor (1024 per image for 16 RoIs) would only slow SGD down 64 times.
    cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "num_samples"
    heads = _build(cfg).train()
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


# Three positives of GT[0] = (20, 20, 60, 60) shifted along x: Box2BoxTransform (10, 10, 5, 5)
# targets dx = 10 * (40 - cx) / 40 = -1, 1, -0.5 and dy = dw = dh = 0: an L1 sum of 2.5 for zero
# predicted deltas (twice that, 5.0, at stage 2's weights (20, 20, 10, 10)). Plus a negative.
SHIFTED = [[24.0, 20.0, 64.0, 60.0], [16.0, 20.0, 56.0, 60.0], [22.0, 20.0, 62.0, 60.0]]
NEGATIVE = [[0.0, 70.0, 30.0, 100.0]]


def _zero_delta_losses(cfg, num_images=1):
    """Regression losses for SHIFTED + NEGATIVE (image 0) when every stage predicts 0 deltas;
    the other images have no ground truth."""
    heads = _build(cfg).train()
    for predictor in heads.reg_predictors:
        _constant_output(predictor, torch.zeros(predictor.out_features))
    proposals = [_packed_proposals(PROPOSALS, SHIFTED + NEGATIVE) for _ in range(num_images)]
    targets = [_targets(GT[:1], [1])] + [_targets([], []) for _ in range(num_images - 1)]
    features = {k: v.repeat(num_images, 1, 1, 1) for k, v in _features(1).items()}
    with EventStorage():
        losses = heads(None, features, proposals, targets)[1]
    return {k: v.item() for k, v in losses.items() if k.startswith("loss_box_reg")}


@pytest.mark.parametrize("num_images", [1, 2])
def test_fixed_normalizer_divides_every_stage_by_the_padded_sample(num_images):
    """Default REG_LOSS_NORMALIZER fixed: L1 sum / (1024 x images) at every stage, whatever the
    number of positives (the authors' padded 512 + 512 RoIs per image)."""
    losses = _zero_delta_losses(_cfg(num_stages=2), num_images)
    # Stage weights 1 and 0.5, lambda 0.5.
    assert losses["loss_box_reg_s1"] == pytest.approx(2.5 / (1024 * num_images) * 0.5, rel=1e-5)
    assert losses["loss_box_reg_s2"] == pytest.approx(5.0 / (1024 * num_images) * 0.25, rel=1e-5)

    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER_PER_IMAGE = 512  # the authors' VOC setting
    losses = _zero_delta_losses(cfg, num_images)
    assert losses["loss_box_reg_s1"] == pytest.approx(2.5 / (512 * num_images) * 0.5, rel=1e-5)


def test_num_samples_normalizer_divides_by_the_sampled_positives():
    cfg = _cfg(num_stages=2)
    cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "num_samples"
    for num_images in (1, 2):  # the image without ground truth adds no positives
        losses = _zero_delta_losses(cfg, num_images)
        assert losses["loss_box_reg_s1"] == pytest.approx(2.5 / 3 * 0.5, rel=1e-5)
        assert losses["loss_box_reg_s2"] == pytest.approx(5.0 / 3 * 0.25, rel=1e-5)


def test_removed_batch_size_normalizer_says_what_to_write():
    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "batch_size"
    with pytest.raises(
        ValueError, match="REG_LOSS_NORMALIZER 'fixed' and REG_LOSS_NORMALIZER_PER_IMAGE 16"
    ):
        _build(cfg)
    cfg.MODEL.DECOUPLED.REG_LOSS_NORMALIZER = "mean"
    with pytest.raises(ValueError, match="MODEL.DECOUPLED.REG_LOSS_NORMALIZER"):
        _build(cfg)


@pytest.mark.parametrize("append_gt", [False, True])
def test_ground_truth_joins_the_regression_proposals_only_when_asked(regression_samples, append_gt):
    """The authors add ground truth to the classification proposals only;
    REG_PROPOSAL_APPEND_GT True adds it to the regression proposals too."""
    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.REG_PROPOSAL_APPEND_GT = append_gt
    heads = _build(cfg).train()
    proposals = [_packed_proposals(PROPOSALS, SHIFTED + NEGATIVE)]
    with EventStorage():
        cls_proposals = heads(None, _features(1), proposals, [_targets(GT, [0, 2])])[0]
    (reg_input,) = regression_samples[0][0]
    expected = SHIFTED + NEGATIVE + (GT if append_gt else [])
    assert reg_input.proposal_boxes.tensor.tolist() == expected
    # Classification: the 3 proposals and the 2 GT boxes, all sampled (batch of 32).
    assert len(cls_proposals[0]) == len(PROPOSALS) + len(GT)


def _two_class_heads(cfg):
    """Heads whose classifier scores classes 0 and 1 above 0.05 for every proposal (class 0
    first) and whose stage 1 predicts different deltas for each class."""
    heads = _build(cfg).eval()
    _constant_output(heads.box_predictor, [2.0, 1.9, -5.0, 0.0])
    stage1 = torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, -0.5, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    if heads.reg_predictors[0].out_features == 4:
        stage1 = stage1[:1]
    _constant_output(heads.reg_predictors[0], stage1.flatten())
    for predictor in heads.reg_predictors[1:]:
        _constant_output(predictor, [0.0, 0.0, 0.3, 0.0])
    return heads, stage1


def _detections(heads):
    boxes = [[10.0, 10.0, 40.0, 40.0], [70.0, 60.0, 110.0, 100.0]]
    proposals = Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.tensor(boxes)))
    with torch.no_grad():
        (result,) = heads(None, _features(1), [proposals])[0]
    return torch.tensor(boxes), result


@pytest.mark.parametrize("setting", ["auto", "per_class"])
def test_single_regressor_gives_every_class_its_own_box(setting):
    """One stage, TEST_CLASS_BOXES auto (or per_class): Fast R-CNN decoding, class c's
    detection of a proposal uses class c's deltas (the authors' single-regressor test)."""
    cfg = _cfg(num_stages=1)
    cfg.MODEL.DECOUPLED.TEST_CLASS_BOXES = setting
    heads, stage1 = _two_class_heads(cfg)
    assert heads.test_class_boxes == "per_class"
    boxes, result = _detections(heads)
    assert sorted(result.pred_classes.tolist()) == [0, 0, 1, 1]
    for box, c in zip(result.pred_boxes.tensor, result.pred_classes):
        expected = heads.reg_box2box_transforms[0].apply_deltas(stage1[c][None].expand(2, 4), boxes)
        assert any(torch.allclose(box, e, atol=1e-4) for e in expected), (c, box)
    # Classes 0 and 1 got different boxes from the same proposal.
    assert len({tuple(b.tolist()) for b in result.pred_boxes.tensor}) == 4


@pytest.mark.parametrize("num_stages, setting", [(1, "argmax"), (3, "auto"), (3, "argmax")])
def test_argmax_boxes_give_every_class_the_predicted_class_box(num_stages, setting):
    """TEST_CLASS_BOXES argmax (auto for a cascade): one box per proposal, stage 1 with the
    predicted class (0 here), the later stages on it; every class's detection shares it."""
    cfg = _cfg(num_stages=num_stages)
    cfg.MODEL.DECOUPLED.TEST_CLASS_BOXES = setting
    heads, stage1 = _two_class_heads(cfg)
    assert heads.test_class_boxes == "argmax"
    boxes, result = _detections(heads)
    assert sorted(result.pred_classes.tolist()) == [0, 0, 1, 1]
    expected = boxes
    for k, transform in enumerate(heads.reg_box2box_transforms):
        deltas = stage1[0] if k == 0 else torch.tensor([0.0, 0.0, 0.3, 0.0])
        expected = transform.apply_deltas(deltas[None].expand(2, 4), expected)
    got = result.pred_boxes.tensor
    for c in (0, 1):
        class_boxes = got[result.pred_classes == c]
        assert torch.allclose(class_boxes[class_boxes[:, 0].argsort()], expected, atol=1e-4)


def test_per_class_boxes_need_the_first_stage_as_output():
    cfg = _cfg(num_stages=3)
    cfg.MODEL.DECOUPLED.TEST_CLASS_BOXES = "per_class"
    with pytest.raises(ValueError, match="TEST_CLASS_BOXES 'per_class'.*TEST_STAGE 1"):
        _build(cfg)
    cfg.MODEL.DECOUPLED.TEST_STAGE = 1  # the cascade's stage 1 alone, every class its own box
    heads, stage1 = _two_class_heads(cfg)
    boxes, result = _detections(heads)
    assert len({tuple(b.tolist()) for b in result.pred_boxes.tensor}) == 4
    cfg.MODEL.DECOUPLED.TEST_CLASS_BOXES = "all"
    with pytest.raises(ValueError, match="MODEL.DECOUPLED.TEST_CLASS_BOXES"):
        _build(cfg)


@pytest.mark.parametrize("num_stages", [1, 2])
def test_first_regression_stage_pools_enlarged_rois(num_stages):
    """REG_ROI_SCALE 1.3 (Table XI): in training and at inference, stage 1 pools every RoI
    through an EnlargedROIPooler; the classifier and the later stages pool the RoIs as they are."""
    assert _build(_cfg(num_stages)).reg_pooler is None  # default 1.0: one pooler for all
    cfg = _cfg(num_stages)
    cfg.MODEL.DECOUPLED.REG_ROI_SCALE = 1.3
    heads = _build(cfg)
    assert isinstance(heads.reg_pooler, EnlargedROIPooler) and heads.reg_pooler.scale == 1.3
    pooled, head_inputs = [], []
    for name in ("box_pooler", "reg_pooler"):
        getattr(heads, name).register_forward_hook(
            lambda m, i, out, n=name: pooled.append((n, out))
        )
    for k, head in enumerate(heads.reg_heads):
        head.register_forward_hook(lambda m, inputs, out, k=k: head_inputs.append((k, inputs[0])))
    expected = ["box_pooler", "reg_pooler"] + ["box_pooler"] * (num_stages - 1)
    proposals = Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.tensor(SHIFTED + PROPOSALS)))
    for mode, run in (
        (
            "train",
            lambda: heads(
                None, _features(1), [_packed_proposals(PROPOSALS, SHIFTED)], [_targets(GT, [0, 2])]
            ),
        ),
        ("eval", lambda: heads(None, _features(1), [proposals])),
    ):
        pooled.clear()
        head_inputs.clear()
        heads.train(mode == "train")
        with EventStorage(), torch.no_grad():
            run()
        assert [n for n, _ in pooled] == expected, mode
        # Regression stage k gets the features of the (k + 1)-th pooling, the classifier the first.
        assert [k for k, _ in head_inputs] == list(range(num_stages))
        assert all(x is pooled[k + 1][1] for k, x in head_inputs), mode
    features = [_features(1)[f] for f in heads.box_in_features]
    enlarged = heads.reg_pooler(features, [proposals.proposal_boxes])
    assert not torch.allclose(enlarged, heads.box_pooler(features, [proposals.proposal_boxes]))


@pytest.mark.parametrize("num_stages, class_boxes", [(1, "per_class"), (3, "argmax")])
def test_fast_path_gives_the_full_paths_detections_on_fewer_rois(num_stages, class_boxes):
    """FAST_PATH regresses only proposals whose best foreground score reaches the test threshold;
    the detections (boxes, scores, classes) equal those of regressing every proposal, for both
    box decodings (the defaults of one stage and of the cascade)."""
    heads = _build(_cfg(num_stages)).eval()
    assert heads.test_class_boxes == class_boxes
    torch.manual_seed(4)
    with torch.no_grad():  # spread the scores so that the threshold splits the proposals
        heads.box_predictor.weight.normal_(std=0.5)
    xy = torch.rand(2, 40, 2) * 90
    wh = torch.rand(2, 40, 2) * 30 + 8
    proposals = [
        Instances(IMAGE_SIZE, proposal_boxes=Boxes(torch.cat([b[0], b[0] + b[1]], 1)))
        for b in zip(xy, wh)
    ]
    seen = []
    heads.reg_heads[0].register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))
    results = {}
    with torch.no_grad():
        features = _features(2)
        scores = torch.softmax(
            heads._classify(
                heads.box_pooler(
                    [features[f] for f in heads.box_in_features],
                    [p.proposal_boxes for p in proposals],
                )
            ),
            -1,
        )
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
