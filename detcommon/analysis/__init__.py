"""
Analyses of trained detectors that reproduce the papers' figures on any model of this project
(FPN baseline, Double-Head, Decoupled R-CNN) and any dataset; `tools/analyze.py` is their
command line (its `nms-sweep` is Decoupled R-CNN's own, in decoupled_rcnn.nms_sweep).

- :mod:`.heads`: runs each box head of a model on given boxes (class scores, regressed boxes).
- :mod:`.proposals`: sliding-window proposals around ground-truth boxes, run through every
  head (Double-Head's Sec. 3.1, Fig. 2, 3, 7); :mod:`.iou_statistics`: their per-bin statistics,
  correlations and groups, as JSON and CSV.
- :mod:`.sensitivity`: spatial correlation of the fc-head's weights (Fig. 4) and of the
  conv-head's output feature maps (Appendix Fig. 8).
- :mod:`.plots`: the figures.
"""
