"""FILM (``film_net``, Style weights) as an eager PyTorch module.

The module tree reproduces the parameter names of the released PyTorch port
(dajes/frame-interpolation-pytorch), so ``load_state_dict(strict=True)`` takes the tensors of
``film_net_fp32.pt`` / ``film_net_fp16.pt``: 82 tensors, 34,436,667 parameters with the default
:class:`FilmConfig`. Smaller widths keep the same 82 names (used for tiny test models).
The code is TorchScript-compatible so tests can save archives in the release format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class FilmConfig:
    """Hyper-parameters; the defaults are ``film_net-Style.gin`` (the released weights)."""

    filters: int = 64
    flow_filters: tuple[int, int, int, int] = (32, 64, 128, 256)
    pyramid_levels: int = 7
    fusion_levels: int = 5
    specialized_levels: int = 3
    sub_levels: int = 4
    flow_convs: int = 3

    def feature_channels(self, level: int) -> int:
        """Channels of the cascaded feature at pyramid ``level``."""
        return sum(self.filters << j for j in range(min(level, self.sub_levels - 1) + 1))

    @property
    def align(self) -> int:
        """Frame sizes are padded to multiples of this (2 ** (pyramid_levels - 1))."""
        return 1 << (self.pyramid_levels - 1)


class Conv(nn.Sequential):
    """A conv unit: the ``nn.Conv2d`` is child ``"0"`` (hence ``<path>.0.weight``), LeakyReLU(0.2) unless linear.

    Odd kernels use symmetric zero padding; the 2x2 kernel pads one column right and one row below (TF 'same').
    """

    def __init__(self, cin: int, cout: int, kernel: int, activation: bool = True):
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2 if kernel % 2 else 0))
        self.activation = activation
        self.pad_even = kernel % 2 == 0

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_even:
            x = F.pad(x, [0, 1, 0, 1])
        for conv in self:
            x = conv(x)
        if self.activation:
            x = F.leaky_relu(x, 0.2)
        return x


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: output (x, y) samples ``image`` at (x + u, y + v), bilinear, clamped to the border.

    The sampling grid and the sampling run in float32 whatever the model precision.
    """
    n, _, h, w = image.shape
    ys = torch.arange(h, device=flow.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=torch.float32).view(1, 1, w)
    px = xs + flow[:, 0].float()
    py = ys + flow[:, 1].float()
    padding = "border"
    if image.device.type == "mps":  # MPS lacks 'border'; clamping the pixel positions is equivalent for bilinear
        px = px.clamp(0.0, float(w - 1))
        py = py.clamp(0.0, float(h - 1))
        padding = "zeros"
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.to(image.dtype)


def upsample_flow(flow: Tensor, like: Tensor) -> Tensor:
    """Double the flow and resize it bilinearly (half-pixel centres) to ``like``'s size."""
    return F.interpolate(2 * flow, size=[like.shape[2], like.shape[3]], mode="bilinear", align_corners=False)


def image_pyramid(image: Tensor, levels: int) -> List[Tensor]:
    """Full size first, each next level a 2x2 average pool (floored)."""
    pyramid = [image]
    for _ in range(levels - 1):
        image = F.avg_pool2d(image, 2, 2)
        pyramid.append(image)
    return pyramid


class SubTreeExtractor(nn.Module):
    """Blocks of two 3x3 conv units, ``filters * 2**j`` wide, with 2x2 pooling between them."""

    def __init__(self, channels: int, filters: int, sub_levels: int):
        super().__init__()
        blocks = []
        for j in range(sub_levels):
            width = filters << j
            blocks.append(nn.Sequential(Conv(channels, width, 3), Conv(width, width, 3)))
            channels = width
        self.convs = nn.ModuleList(blocks)

    def forward(self, image: Tensor, depth: int) -> List[Tensor]:
        out: List[Tensor] = []
        x = image
        for j, block in enumerate(self.convs):
            if j < depth:
                if j > 0:
                    x = F.avg_pool2d(x, 2, 2)
                x = block(x)
                out.append(x)
        return out


class FeatureExtractor(nn.Module):
    """The same sub-tree on every pyramid level; level i concatenates S_i[0], S_(i-1)[1], S_(i-2)[2], ..."""

    def __init__(self, channels: int, filters: int, sub_levels: int):
        super().__init__()
        self.extract_sublevels = SubTreeExtractor(channels, filters, sub_levels)
        self.sub_levels = sub_levels

    def forward(self, pyramid: List[Tensor]) -> List[Tensor]:
        levels = len(pyramid)
        sub: List[List[Tensor]] = []
        for i, image in enumerate(pyramid):
            sub.append(self.extract_sublevels(image, min(levels - i, self.sub_levels)))
        features: List[Tensor] = []
        for i in range(levels):
            parts: List[Tensor] = []
            for j in range(min(i + 1, self.sub_levels)):
                parts.append(sub[i - j][j])
            features.append(torch.cat(parts, dim=1))
        return features


class FlowHead(nn.Module):
    """3x3 conv units, a 1x1 unit to half width, and a linear 1x1 conv to the 2-channel (x, y) flow."""

    def __init__(self, channels: int, convs: int, filters: int):
        super().__init__()
        layers = [Conv(channels if i == 0 else filters, filters, 3) for i in range(convs)]
        layers += [Conv(filters, filters // 2, 1), Conv(filters // 2, 2, 1, activation=False)]
        self._convs = nn.ModuleList(layers)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        x = torch.cat([a, b], dim=1)
        for layer in self._convs:
            x = layer(x)
        return x


class PyramidFlowEstimator(nn.Module):
    """Coarse-to-fine residual flow; ``_predictors`` are the specialised heads stored coarse to fine."""

    def __init__(self, config: FilmConfig):
        super().__init__()
        shared = 2 * config.feature_channels(config.specialized_levels)
        self._predictor = FlowHead(shared, config.flow_convs, config.flow_filters[-1])
        self._predictors = nn.ModuleList(
            FlowHead(2 * config.feature_channels(level), config.flow_convs, config.flow_filters[level])
            for level in reversed(range(config.specialized_levels))
        )
        self.specialized_levels = config.specialized_levels

    def forward(self, fa: List[Tensor], fb: List[Tensor]) -> List[Tensor]:
        """Flow pyramid (finest first), float32 whatever the model precision: v maps a pixel of ``a`` to its
        match in ``b``. The heads run in the model precision; the flows they refine are accumulated in float32.
        """
        levels = len(fa)
        v = self._predictor(fa[levels - 1], fb[levels - 1]).float()
        coarse_first: List[Tensor] = [v]
        for i in range(levels - 2, self.specialized_levels - 1, -1):
            u = upsample_flow(v, fa[i])
            v = u + self._predictor(fa[i], warp(fb[i], u)).float()
            coarse_first.append(v)
        for k, head in enumerate(self._predictors):
            i = self.specialized_levels - 1 - k
            u = upsample_flow(v, fa[i])
            v = u + head(fa[i], warp(fb[i], u)).float()
            coarse_first.append(v)
        flows: List[Tensor] = []
        for k in range(len(coarse_first)):
            flows.append(coarse_first[len(coarse_first) - 1 - k])
        return flows


class Fusion(nn.Module):
    """Decoder from the aligned level 4 up to full size; ``convs.0`` is the coarsest stage."""

    def __init__(self, config: FilmConfig):
        super().__init__()
        aligned = [2 * (3 + config.feature_channels(i)) + 4 for i in range(config.fusion_levels)]
        stages = []
        previous = aligned[-1]
        for i in reversed(range(config.fusion_levels - 1)):
            width = config.filters << min(i, config.specialized_levels)
            stages.append(
                nn.ModuleList([
                    Conv(previous, width, 2, activation=False),
                    Conv(aligned[i] + width, width, 3),
                    Conv(width, width, 3),
                ])
            )
            previous = width
        self.convs = nn.ModuleList(stages)
        self.output_conv = nn.Conv2d(previous, 3, 1)

    def forward(self, aligned: List[Tensor]) -> Tensor:
        x = aligned[len(aligned) - 1]
        for k, stage in enumerate(self.convs):
            a = aligned[len(aligned) - 2 - k]
            x = F.interpolate(x, size=[a.shape[2], a.shape[3]], mode="nearest")
            for j, unit in enumerate(stage):
                x = unit(x)
                if j == 0:
                    x = torch.cat([a, x], dim=1)
        return self.output_conv(x)


class FilmNet(nn.Module):
    """FILM: two frames ``[B,3,H,W]`` in 0..1 and times ``t`` ``[B,1]`` (0 = x0) to the frame at t (unclamped).

    The work splits in three parts that callers can share: :meth:`features` per frame, :meth:`flows` per
    pair (whatever the number of times wanted between its frames), :meth:`synthesize` per time;
    ``forward`` runs the three on one batch of pairs. ``honours_t=False`` reproduces release v1.0.0,
    whose code always interpolates at t = 0.5. H and W should be multiples of ``config.align`` (64);
    :func:`pad_to` does that.
    """

    def __init__(self, config: FilmConfig = FilmConfig(), honours_t: bool = True):
        super().__init__()
        self.config = config
        self.honours_t = honours_t
        self.pyramid_levels = config.pyramid_levels
        self.fusion_levels = config.fusion_levels
        self.extract = FeatureExtractor(3, config.filters, config.sub_levels)
        self.predict_flow = PyramidFlowEstimator(config)
        self.fuse = Fusion(config)

    def features(self, x: Tensor) -> List[Tensor]:
        """Per frame: for each pyramid level, the image and its cascaded features as one tensor
        ``[N, 3 + F_i, h_i, w_i]`` (image channels first: the order in which fusion warps them)."""
        pyramid = image_pyramid(x, self.pyramid_levels)
        features = self.extract(pyramid)
        levels: List[Tensor] = []
        for i in range(len(pyramid)):
            levels.append(torch.cat([pyramid[i], features[i]], dim=1))
        return levels

    def flows(self, a: List[Tensor], b: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per pair (levels of :meth:`features` for the frames at 0 and 1): the float32 flow pyramids
        ``flow01`` (from a to b) and ``flow10``, fusion levels only. Both directions run as one batch."""
        n = a[0].shape[0]
        fa: List[Tensor] = []
        fb: List[Tensor] = []
        for i in range(len(a)):
            fa.append(torch.cat([a[i][:, 3:], b[i][:, 3:]], dim=0))
            fb.append(torch.cat([b[i][:, 3:], a[i][:, 3:]], dim=0))
        flows = self.predict_flow(fa, fb)
        flow01: List[Tensor] = []
        flow10: List[Tensor] = []
        for i in range(self.fusion_levels):
            flow01.append(flows[i][:n])
            flow10.append(flows[i][n:])
        return flow01, flow10

    def time_scaled(self, flow01: List[Tensor], flow10: List[Tensor], t: Tensor) -> Tuple[List[Tensor], List[Tensor]]:
        """The flows that read frame 0 (``t * flow10``) and frame 1 (``(1 - t) * flow01``) at times ``t``
        ``[N,1]``, in float32."""
        if not self.honours_t:
            t = torch.full_like(t, 0.5)
        time = t.float().view(t.shape[0], 1, 1, 1)
        from0: List[Tensor] = []
        from1: List[Tensor] = []
        for i in range(len(flow01)):
            from0.append(time * flow10[i].float())
            from1.append((1 - time) * flow01[i].float())
        return from0, from1

    def synthesize(self, a: List[Tensor], b: List[Tensor], flow01: List[Tensor], flow10: List[Tensor],
                   t: Tensor) -> Tensor:
        """Per time: the frames at ``t`` ``[N,1]`` from the levels of both frames and their pair's flows
        (all with batch N; one pair may appear several times, once per time)."""
        from0, from1 = self.time_scaled(flow01, flow10, t)
        aligned: List[Tensor] = []
        for i in range(self.fusion_levels):
            w0 = warp(a[i], from0[i])
            w1 = warp(b[i], from1[i])
            aligned.append(torch.cat([w0, w1, from0[i].to(w0.dtype), from1[i].to(w0.dtype)], dim=1))
        return self.fuse(aligned)

    def forward(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """Everything for one batch of pairs, nothing shared between calls."""
        n = x0.shape[0]
        levels = self.features(torch.cat([x0, x1], dim=0))
        a: List[Tensor] = []
        b: List[Tensor] = []
        for level in levels:
            a.append(level[:n])
            b.append(level[n:])
        flow01, flow10 = self.flows(a, b)
        return self.synthesize(a, b, flow01, flow10, t)


def pad_to(x: Tensor, align: int) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad H and W up to multiples of ``align``, split evenly (floor half before); returns the crop box."""
    h, w = x.shape[-2:]
    ph, pw = -h % align, -w % align
    top, left = ph // 2, pw // 2
    if ph or pw:
        x = F.pad(x, [left, pw - left, top, ph - top])
    return x, (top, left, h, w)


def crop(x: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to`."""
    top, left, h, w = box
    return x[..., top : top + h, left : left + w]
