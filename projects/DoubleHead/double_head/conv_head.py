"""
The conv-head of Double-Head (Fig. 5): residual blocks with non-local blocks on a 7x7 RoI.

Shape shorthand:

    R: number of RoIs (boxes) of the batch, all images together
    C: number of feature channels; C_in and C_out at a block's input and output
    P: the pooler's output resolution: the RoI features are P x P (7 x 7 here), and every
       block keeps that size
    D: length of the feature vector a box head outputs per RoI (here `conv_dim`)
"""

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone.resnet import BottleneckBlock
from detectron2.modeling.roi_heads import ROI_BOX_HEAD_REGISTRY
from torch import nn
from torch.nn import functional as F

__all__ = ["UpChannelBlock", "NonLocalBlock", "DoubleHeadConvHead", "NONLOCAL_INITS"]

# How a non-local block starts as an identity, value -> description.
NONLOCAL_INITS = {
    # the authors' code (attention.py, _NonLocalBlockND_Group)
    "zero_conv": "last 1x1 conv with a bias, weight and bias 0, then its norm with scale 1",
    # this project's earlier init: the last norm's scale at 0
    "zero_norm": "last 1x1 conv without bias, then its norm with scale 0",
}


class UpChannelBlock(CNNBlockBase):
    """
    Residual block of Fig. 5a that raises the channel count: a 3x3 conv (inner channels) and a
    1x1 conv (out channels) on the main path, a 1x1 conv on the shortcut, each followed by norm.
    (R, C_in, P, P) -> (R, C_out, P, P).
    """

    def __init__(self, in_channels, out_channels, *, bottleneck_channels, norm="BN"):
        super().__init__(in_channels, out_channels, stride=1)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            kernel_size=3,
            padding=1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            out_channels,
            kernel_size=1,
            bias=False,
            norm=get_norm(norm, out_channels),
        )
        self.shortcut = Conv2d(
            in_channels, out_channels, kernel_size=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in [self.conv1, self.conv2, self.shortcut]:
            weight_init.c2_msra_fill(layer)

    def forward(self, x):
        out = self.conv2(F.relu_(self.conv1(x)))
        return F.relu_(out + self.shortcut(x))


class NonLocalBlock(CNNBlockBase):
    """
    Grouped non-local block of Fig. 5c. theta, phi and g are 1x1 convs to `inner_channels`,
    split into `num_groups` groups; in each group every position gathers g over all P*P
    positions, weighted by the dot product theta_i . phi_j divided by P*P (no softmax). A 1x1 conv
    back to `channels` and a norm, initialised as `init` says (see :data:`NONLOCAL_INITS`), make
    the block an identity at initialisation; it ends with a residual add and a ReLU.
    (R, C, P, P) -> (R, C, P, P).
    """

    def __init__(self, channels, *, inner_channels, num_groups=4, norm="BN", init="zero_conv"):
        super().__init__(channels, channels, stride=1)
        if inner_channels % num_groups != 0:
            raise ValueError(
                f"Non-local inner channels ({inner_channels}) must be divisible by the number "
                f"of groups ({num_groups})"
            )
        assert init in NONLOCAL_INITS, init
        self.num_groups = num_groups
        self.theta = Conv2d(channels, inner_channels, kernel_size=1)
        self.phi = Conv2d(channels, inner_channels, kernel_size=1)
        self.g = Conv2d(channels, inner_channels, kernel_size=1)
        self.out = Conv2d(
            inner_channels,
            channels,
            kernel_size=1,
            bias=init == "zero_conv",
            norm=get_norm(norm, channels),
        )
        for layer in [self.theta, self.phi, self.g, self.out]:
            weight_init.c2_msra_fill(layer)
        # The residual branch starts at 0 (the norm's shift is 0), the block as an identity.
        if init == "zero_conv" or self.out.norm is None:
            nn.init.constant_(self.out.weight, 0)
            if self.out.bias is not None:
                nn.init.constant_(self.out.bias, 0)
        else:
            nn.init.constant_(self.out.norm.weight, 0)

    def forward(self, x):
        h, w = x.shape[2:]
        # (R, groups, inner channels per group, P*P); no -1 over R, which may be 0
        theta = self.theta(x).unflatten(1, (self.num_groups, -1)).flatten(3)
        phi = self.phi(x).unflatten(1, (self.num_groups, -1)).flatten(3)
        g = self.g(x).unflatten(1, (self.num_groups, -1)).flatten(3)
        affinity = torch.matmul(theta.transpose(2, 3), phi) / (h * w)  # (R, groups, P*P, P*P)
        y = torch.matmul(g, affinity.transpose(2, 3))  # y[..., i] = sum_j affinity[i, j] g[..., j]
        y = self.out(y.flatten(1, 2).unflatten(2, (h, w)))
        return F.relu_(x + y)


@ROI_BOX_HEAD_REGISTRY.register()
class DoubleHeadConvHead(nn.Sequential):
    """
    The conv-head of Double-Head: an up-channel residual block, then bottleneck blocks, each of
    the first `num_nonlocal` of them preceded by a non-local block, then average pooling.
    (R, C_in, P, P) -> (R, D), D = `conv_dim`.
    """

    analysis_name = "conv"  # its name in detcommon.heads when it is a StandardROIHeads' box head

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        conv_dim: int,
        bottleneck_dim: int,
        num_bottlenecks: int,
        num_nonlocal: int,
        nonlocal_dim: int,
        nonlocal_groups: int,
        nonlocal_init: str = "zero_conv",
        norm: str = "BN",
    ):
        """
        Args:
            input_shape (ShapeSpec): shape of the pooled RoI features, C_in x P x P.
            conv_dim (int): channels after the up-channel block, of every later block, and of
                the output (D).
            bottleneck_dim (int): inner channels of the up-channel block and of each bottleneck.
            num_bottlenecks (int): number of bottleneck blocks after the up-channel block.
            num_nonlocal (int): number of non-local blocks, one in front of each of the first
                `num_nonlocal` bottlenecks; at most `num_bottlenecks`.
            nonlocal_dim (int): inner channels of the non-local blocks.
            nonlocal_groups (int): groups of the non-local blocks.
            nonlocal_init (str): how the non-local blocks start as identities, a key of
                :data:`NONLOCAL_INITS`.
            norm (str): normalization after every conv (see :func:`detectron2.layers.get_norm`).
        """
        super().__init__()
        if not 0 <= num_nonlocal <= num_bottlenecks:
            raise ValueError(
                f"{_KEY}NUM_NONLOCAL (num_nonlocal: one non-local block before each of the first "
                f"bottlenecks) must be in [0, {_KEY}NUM_BOTTLENECKS={num_bottlenecks}], "
                f"got {num_nonlocal}"
            )
        self.add_module(
            "up_channel",
            UpChannelBlock(
                input_shape.channels, conv_dim, bottleneck_channels=bottleneck_dim, norm=norm
            ),
        )
        for k in range(num_bottlenecks):
            if k < num_nonlocal:
                self.add_module(
                    f"nonlocal{k + 1}",
                    NonLocalBlock(
                        conv_dim,
                        inner_channels=nonlocal_dim,
                        num_groups=nonlocal_groups,
                        norm=norm,
                        init=nonlocal_init,
                    ),
                )
            self.add_module(
                f"bottleneck{k + 1}",
                BottleneckBlock(conv_dim, conv_dim, bottleneck_channels=bottleneck_dim, norm=norm),
            )
        self.add_module("avgpool", nn.AdaptiveAvgPool2d(1))
        self.add_module("flatten", nn.Flatten())
        self._output_size = conv_dim

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.DOUBLE_HEAD.CONV_HEAD
        _check_conv_head_config(head)
        return {
            "input_shape": input_shape,
            "conv_dim": head.CONV_DIM,
            "bottleneck_dim": head.BOTTLENECK_DIM,
            "num_bottlenecks": head.NUM_BOTTLENECKS,
            "num_nonlocal": head.NUM_NONLOCAL,
            "nonlocal_dim": head.NONLOCAL_DIM,
            "nonlocal_groups": head.NONLOCAL_GROUPS,
            "nonlocal_init": head.NONLOCAL_INIT,
            "norm": head.NORM,
        }

    @property
    @torch.jit.unused
    def output_shape(self):
        """
        Returns:
            ShapeSpec: the output feature shape
        """
        return ShapeSpec(channels=self._output_size)


_KEY = "MODEL.DOUBLE_HEAD.CONV_HEAD."
# The names detectron2.layers.get_norm accepts ("" = no normalization).
_NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N", "LN")


def _check_conv_head_config(head):
    """Raises ValueError naming the MODEL.DOUBLE_HEAD.CONV_HEAD key of a bad size or norm."""
    for key, minimum in (
        ("CONV_DIM", 1), ("BOTTLENECK_DIM", 1), ("NUM_BOTTLENECKS", 0), ("NONLOCAL_DIM", 1),
        ("NONLOCAL_GROUPS", 1),
    ):  # fmt: skip
        value = head[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{_KEY}{key} must be an integer >= {minimum}, got {value!r}")
    if head.NUM_NONLOCAL and head.NONLOCAL_DIM % head.NONLOCAL_GROUPS:
        raise ValueError(
            f"{_KEY}NONLOCAL_DIM ({head.NONLOCAL_DIM}) must be a multiple of "
            f"{_KEY}NONLOCAL_GROUPS ({head.NONLOCAL_GROUPS})"
        )
    if head.NONLOCAL_INIT not in NONLOCAL_INITS:
        raise ValueError(
            f"{_KEY}NONLOCAL_INIT must be one of {sorted(NONLOCAL_INITS)}, got "
            f"{head.NONLOCAL_INIT!r}: use 'zero_conv' (authors' code)"
        )
    if head.NORM not in _NORMS:
        raise ValueError(f"{_KEY}NORM must be one of {list(_NORMS)}, got {head.NORM!r}")
    if head.NORM == "GN":
        for key in ("CONV_DIM", "BOTTLENECK_DIM", "NONLOCAL_DIM"):
            if head[key] % 32:
                raise ValueError(
                    f"{_KEY}NORM 'GN' uses 32 groups: {_KEY}{key} must be a multiple of 32, "
                    f"got {head[key]}"
                )
