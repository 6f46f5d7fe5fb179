"""COCO 2017 data as Base-RCNN-FPN.yaml and Detectron2's defaults read it: multi-scale training
(shortest edge 640-800, at most 1333, horizontal flip), 800 px at test, 16 images per batch, the
project's CheckedDatasetMapper (unreadable images named) and PaperCOCOEvaluator (AP50-AP90).

Project keys: `register_coco` (DATASETS.REGISTER_COCO, appended to by train_net.py's --dataset),
`shapes_root` (DATASETS.SHAPES_ROOT), `train.mapper.skip_bad_images` (DATALOADER.SKIP_BAD_IMAGES).
Each dataset of `test.dataset.names` is evaluated on its own, as DATASETS.TEST; an empty list
turns evaluation off.
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from omegaconf import OmegaConf

from detcommon.data.mapper import CheckedDatasetMapper
from detcommon.engine.lazy import build_train_loader
from detcommon.evaluation import PaperCOCOEvaluator

dataloader = OmegaConf.create()
dataloader.register_coco = []  # [NAME, JSON_FILE, IMAGE_DIR], registered before training
dataloader.shapes_root = ""  # "" = $SHAPES_DATASET_DIR or ~/.cache/detectron2_doublehead/shapes

dataloader.train = L(build_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names=["coco_2017_train"], filter_empty=True),
    mapper=L(CheckedDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(  # INPUT.MIN_SIZE_TRAIN, MAX_SIZE_TRAIN
                short_edge_length=(640, 672, 704, 736, 768, 800),
                max_size=1333,
                sample_style="choice",
            ),
            L(T.RandomFlip)(horizontal=True, vertical=False),
        ],
        image_format="BGR",
        use_instance_mask=False,  # MODEL.MASK_ON
        skip_bad_images=False,
    ),
    total_batch_size=16,  # SOLVER.IMS_PER_BATCH
    aspect_ratio_grouping=True,
    num_workers=4,  # DATALOADER.NUM_WORKERS
    seed="${train.seed}",
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names=["coco_2017_val"], filter_empty=False),
    mapper=L(CheckedDatasetMapper)(
        is_train=False,
        augmentations=[  # INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST
            L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333, sample_style="choice"),
        ],
        image_format="${dataloader.train.mapper.image_format}",
        use_instance_mask=False,
    ),
    num_workers="${dataloader.train.num_workers}",
)

# train_net.py sets dataset_name to each test dataset in turn, output_dir to
# train.output_dir/inference/<dataset> unless given here.
dataloader.evaluator = L(PaperCOCOEvaluator)(dataset_name="${dataloader.test.dataset.names}")
