"""EnlargedROIPooler (detcommon.poolers): the Double-Head authors' PoolerNeighbor, i.e. each box
enlarged about its centre, pooled on the FPN level of the original box, not clipped."""

import math
import warnings

import pytest
import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes

from detcommon.poolers import EnlargedROIPooler, enlarge_boxes

torch.set_num_threads(1)

STRIDES = (4, 8, 16, 32)  # P2-P5
IMAGE = 256  # square images, the batch is 2 of them
CHANNELS = 3


def _features():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(2, CHANNELS, IMAGE // s, IMAGE // s, generator=g) for s in STRIDES]


def _pooler(cls=ROIPooler, **kwargs):
    return cls(
        output_size=7,
        scales=tuple(1.0 / s for s in STRIDES),
        sampling_ratio=2,
        pooler_type="ROIAlignV2",
        **kwargs,
    )


def _box(cx, cy, size):
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


def _reference(features, box_lists, scale):
    """
    Pooled features (R, C, 7, 7) computed box by box, without ROIPooler: the level from the
    ORIGINAL box by Eq. 1 of the FPN paper (canonical 224 px on P4), the box enlarged by hand.
    """
    out = []
    for image, boxes in enumerate(box_lists):
        for x1, y1, x2, y2 in boxes.tensor.tolist():
            level = math.floor(4 + math.log2(math.sqrt((x2 - x1) * (y2 - y1)) / 224 + 1e-8))
            level = min(max(level, 2), 5)
            cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            box = [
                cx - scale * half_w,
                cy - scale * half_h,
                cx + scale * half_w,
                cy + scale * half_h,
            ]
            align = ROIAlign(7, 1.0 / STRIDES[level - 2], sampling_ratio=2, aligned=True)
            out.append(align(features[level - 2], torch.tensor([[image, *box]])))
    return torch.cat(out)


def test_enlarge_boxes_about_centre_without_clipping():
    boxes = Boxes(torch.tensor([[20.0, 30.0, 40.0, 70.0], [0.0, 0.0, 10.0, 10.0]]))
    enlarged = enlarge_boxes(boxes, 1.3)
    assert torch.allclose(enlarged.tensor[0], torch.tensor([17.0, 24.0, 43.0, 76.0]))
    assert torch.allclose(enlarged.get_centers(), boxes.get_centers())
    assert torch.allclose(enlarged.tensor[1], torch.tensor([-1.5, -1.5, 11.5, 11.5]))  # not clipped


def test_level_is_that_of_the_original_box():
    """Boxes just below a level boundary: enlarged by 1.3 they would map one level up."""
    features = _features()
    # sqrt(area) 200 -> P3 (below 224), enlarged 260 -> P4; 100 -> P2, 130 -> P3; 420 -> P4, 546 -> P5
    box_lists = [
        Boxes(torch.tensor([_box(128, 128, 200), _box(60, 70, 100)])),
        Boxes(torch.tensor([_box(128, 128, 420)])),
    ]
    enlarged_levels = assign_boxes_to_levels(
        [enlarge_boxes(b, 1.3) for b in box_lists], 2, 5, 224, 4
    )
    original_levels = assign_boxes_to_levels(box_lists, 2, 5, 224, 4)
    assert original_levels.tolist() == [1, 0, 2] and enlarged_levels.tolist() == [2, 1, 3]

    pooled = _pooler(EnlargedROIPooler, scale=1.3)(features, box_lists)
    torch.testing.assert_close(pooled, _reference(features, box_lists, 1.3))
    # a plain ROIPooler on the enlarged boxes picks the coarser levels: other features
    plain = _pooler()(features, [enlarge_boxes(b, 1.3) for b in box_lists])
    for i in range(3):
        assert not torch.allclose(pooled[i], plain[i], atol=1e-3), i


def test_enlarged_box_is_not_clipped_to_the_image():
    features = _features()
    # in the top-left corner (enlarged: -9 to 69) and at the right border (enlarged: 186 to 264)
    box_lists = [
        Boxes(torch.tensor([[0.0, 0.0, 60.0, 60.0]])),
        Boxes(torch.tensor([_box(225, 100, 60)])),
    ]
    pooled = _pooler(EnlargedROIPooler, scale=1.3)(features, box_lists)
    torch.testing.assert_close(pooled, _reference(features, box_lists, 1.3))
    clipped = [enlarge_boxes(b, 1.3) for b in box_lists]
    for b in clipped:
        b.clip((IMAGE, IMAGE))
    # the clipped boxes map to P2 as well: the difference is the clipping alone
    assert assign_boxes_to_levels(clipped, 2, 5, 224, 4).tolist() == [0, 0]
    clipped_pooled = _pooler()(features, clipped)
    for i in range(2):
        assert not torch.allclose(pooled[i], clipped_pooled[i], atol=1e-3), i


def test_scale_one_is_roi_pooler():
    features = _features()
    g = torch.Generator().manual_seed(1)
    box_lists = []
    for n in (30, 7):
        xy = torch.rand(n, 2, generator=g) * 200
        wh = torch.rand(n, 2, generator=g) * 300 + 2
        box_lists.append(Boxes(torch.cat([xy, xy + wh], dim=1)))
    expected = _pooler()(features, box_lists)
    assert torch.equal(_pooler(EnlargedROIPooler, scale=1.0)(features, box_lists), expected)
    torch.testing.assert_close(
        _pooler(EnlargedROIPooler, scale=1.3)(features, box_lists),
        _reference(features, box_lists, 1.3),
    )


@pytest.mark.parametrize("scale", [1.3, 1.0])
def test_empty_inputs(scale):
    features = _features()
    pooler = _pooler(EnlargedROIPooler, scale=scale)
    empty = Boxes(torch.zeros(0, 4))
    assert pooler(features, [empty, empty]).shape == (0, CHANNELS, 7, 7)
    one = Boxes(torch.tensor([_box(128, 128, 200)]))
    torch.testing.assert_close(
        pooler(features, [empty, one]), _reference(features, [empty, one], scale)
    )
    assert pooler([f[:0] for f in features], []).shape == (0, CHANNELS, 7, 7)  # no image


def test_single_level():
    feature = _features()[2]
    pooler = EnlargedROIPooler(7, (1.0 / 16,), 2, "ROIAlignV2", scale=1.3)
    boxes = [Boxes(torch.tensor([_box(100, 100, 50)])), Boxes(torch.tensor([_box(20, 200, 90)]))]
    align = ROIAlign(7, 1.0 / 16, sampling_ratio=2, aligned=True)
    expected = align(feature, torch.tensor([[0, *_box(100, 100, 65)], [1, *_box(20, 200, 117)]]))
    torch.testing.assert_close(pooler([feature], boxes), expected)


@pytest.mark.parametrize("scale", [0.0, -1.3])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale must be > 0"):
        _pooler(EnlargedROIPooler, scale=scale)


def test_traced_pooler_follows_the_number_of_boxes():
    """A traced model pools as many boxes as it is given, not as many as it was traced with."""
    features = _features()
    pooler = _pooler(EnlargedROIPooler, scale=1.3)

    def pool(boxes, *features):
        return pooler(list(features), [Boxes(boxes), Boxes(boxes[:1])])

    traced_boxes = torch.tensor([_box(60, 60, 40 + 30 * i) for i in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(pool, (traced_boxes, *features), check_trace=False)
    boxes = torch.tensor([[0.0, 0.0, 120.0, 120.0], [30.0, 40.0, 60.0, 90.0], _box(160, 170, 180)])
    torch.testing.assert_close(traced(boxes, *features), pool(boxes, *features))
