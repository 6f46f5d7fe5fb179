"""
Analyses of trained detectors that reproduce the papers' figures on any model of this project
(FPN baseline, Double-Head, Decoupled R-CNN) and any dataset; `tools/analyze.py` is their
command line.

- :mod:`.heads`: runs each box head of a model on given boxes (class scores, regressed boxes).
- :mod:`.proposals`: sliding-window proposals around ground-truth boxes, run through every
  head (Double-Head's Sec. 3.1, Fig. 2, 3, 7); :mod:`.iou_statistics`: their per-bin statistics,
  correlations and groups, as JSON and CSV.
- :mod:`.sensitivity`: spatial correlation of the fc-head's weights (Fig. 4) and of the
  conv-head's output feature maps (Appendix Fig. 8).
- :mod:`.nms_sweep`: trains one model per RPN NMS setting and tabulates AP (Decoupled R-CNN
  Tables I and III).
- :mod:`.plots`: the figures.
"""
