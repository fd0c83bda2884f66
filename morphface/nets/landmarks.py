"""A small differentiable heatmap landmark detector: the offline stand-in for MMFA's pre-trained 2D landmark network.

:class:`HeatmapLandmarkNet` is a 2D U-Net (:class:`~morphface.nets.keypoints.blocks.Hourglass2d`) on the image
(optionally down-sampled by ``scale``) giving one heatmap per landmark; a spatial softmax and the expected
position (soft-argmax) turn each into ``(x, y)`` in **pixels** of the input image (library convention: origin at the
top-left corner, pixel centres at integer + 0.5), so the output is differentiable in the image, as MMFA's 2D
landmark loss needs. It predicts the 68 iBUG points that synthetic caches store as ground truth (MMFA's detector
has 145 points with pupils; none can be downloaded here). The library trains it on its own renders
(:func:`train_landmark_net`; ``python -m morphface.pipelines.landmark_net`` on a clip cache) or loads user-given
weights (:func:`load_landmark_net`). :func:`landmark_nme` is the usual normalised mean error (inter-ocular: outer
eye corners 36 and 45).

Files: safetensors of the ``state_dict`` with the JSON config in the metadata (never unpickled).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputShapeError
from .auxiliary import UNetHead, check_rgb, load_network, random_brightness_contrast, save_network, train_network

__all__ = ["LandmarkNetConfig", "HeatmapLandmarkNet", "train_landmark_net", "landmark_nme", "save_landmark_net",
           "load_landmark_net"]

_FORMAT = "morphface.HeatmapLandmarkNet"


@dataclass(frozen=True)
class LandmarkNetConfig:
    """Sizes of :class:`HeatmapLandmarkNet`.

    Attributes:
        num_landmarks: output points (68).
        base_channels: first U-Net block (16).
        num_blocks: down/up blocks (3).
        max_channels: channel cap (128).
        scale: the image is resized by this factor before the U-Net (0.5: heatmaps at half resolution).
        temperature: of the spatial softmax (learned logits are divided by it; 1).
    """

    num_landmarks: int = 68
    base_channels: int = 16
    num_blocks: int = 3
    max_channels: int = 128
    scale: float = 0.5
    temperature: float = 1.0


class HeatmapLandmarkNet(UNetHead):
    """Image -> landmarks ``(B, n, 2)`` in pixels (module docstring)."""

    def __init__(self, config: LandmarkNetConfig | None = None) -> None:
        cfg = config or LandmarkNetConfig()
        super().__init__(cfg.base_channels, cfg.num_blocks, cfg.max_channels, cfg.num_landmarks)
        self.config = cfg

    def heatmaps(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, n, h, w)`` heatmap logits (``h = H * scale``)."""
        check_rgb(image)
        x = image
        if self.config.scale != 1:
            x = F.interpolate(x, scale_factor=self.config.scale, mode="bilinear", align_corners=False, antialias=True)
        return self.maps(x)

    def soft_argmax(self, logits: Tensor, size: tuple[int, int]) -> Tensor:
        """``(B, n, h, w)`` heatmap logits -> ``(B, n, 2)`` expected positions in pixels of an ``size = (H, W)``
        image."""
        B, n, h, w = logits.shape
        prob = torch.softmax(logits.flatten(2).float() / self.config.temperature, dim=-1).reshape(B, n, h, w)
        H, W = size
        xs = (torch.arange(w, device=logits.device, dtype=prob.dtype) + 0.5) * (W / w)
        ys = (torch.arange(h, device=logits.device, dtype=prob.dtype) + 0.5) * (H / h)
        x = (prob.sum(dim=2) * xs).sum(-1)
        y = (prob.sum(dim=3) * ys).sum(-1)
        return torch.stack([x, y], dim=-1).to(logits.dtype)

    def forward(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, n, 2)`` soft-argmax positions in pixels of the input image."""
        return self.soft_argmax(self.heatmaps(image), tuple(image.shape[-2:]))


def _random_similarity(images: Tensor, landmarks: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Warp images by a random similarity ``x'(p) = x(A p + b)`` (normalised coordinates) and move the pixel
    landmarks to match (``p = A^{-1} (q - b)``)."""
    n = images.shape[0]
    u = torch.rand(n, 4, generator=g) * 2 - 1
    ang, sc = u[:, 0] * 0.1745, 1 + u[:, 1] * 0.1
    c, s = torch.cos(ang) * sc, torch.sin(ang) * sc
    A = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], 1)  # (n, 2, 2)
    b = u[:, 2:] * 0.12
    theta = torch.cat([A, b[:, :, None]], dim=2).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    H, W = images.shape[-2:]
    side = torch.tensor([W, H], dtype=images.dtype, device=images.device)
    q = landmarks * (2 / side) - 1
    p = (q - b[:, None, :].to(q)) @ torch.linalg.inv(A).transpose(-1, -2).to(q)
    return warped, (p + 1) * (side / 2)


def _heatmap_cross_entropy(logits: Tensor, landmarks: Tensor, size, temperature: float) -> Tensor:
    """Mean cross-entropy of the spatial softmax of ``(B, n, h, w)`` logits against normalised Gaussians
    (sigma 1 heatmap pixel) around ``(B, n, 2)`` pixel landmarks of an image of ``size``."""
    B, n, h, w = logits.shape
    H, W = size
    xs = torch.arange(w, device=logits.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=logits.device, dtype=torch.float32) + 0.5
    px = landmarks[..., 0].float() * (w / W)
    py = landmarks[..., 1].float() * (h / H)
    d2 = (xs[None, None, None, :] - px[..., None, None]) ** 2 + (ys[None, None, :, None] - py[..., None, None]) ** 2
    target = torch.softmax(-0.5 * d2.flatten(2), dim=-1)
    logp = torch.log_softmax(logits.flatten(2).float() / temperature, dim=-1)
    return -(target * logp).sum(-1).mean() * 0.1


def landmark_nme(pred: Tensor, target: Tensor) -> Tensor:
    """Mean point-to-point error normalised by the inter-ocular distance (outer eye corners 36 and 45).

    Args:
        pred, target: ``(B, 68, 2)``.

    Returns:
        ``(B,)`` NME per image.
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[1] != 68 or pred.shape[2] != 2:
        raise InputShapeError(f"pred and target must both be (B, 68, 2); got {tuple(pred.shape)} and "
                              f"{tuple(target.shape)}")
    iod = (target[:, 36] - target[:, 45]).norm(dim=-1).clamp(min=1e-6)
    return (pred - target).norm(dim=-1).mean(dim=1) / iod


def train_landmark_net(images: Tensor, landmarks: Tensor, *, steps: int = 300, batch_size: int = 16,
                       lr: float = 3e-3, config: LandmarkNetConfig | None = None, seed: int = 0,
                       augment: bool = True, log: Callable[[int, float], None] | None = None) -> HeatmapLandmarkNet:
    """Train a :class:`HeatmapLandmarkNet` on images with known landmarks.

    The loss is the mean L1 distance of the soft-argmax positions to the targets, in units of the image side, plus
    the cross-entropy of each spatial softmax against a Gaussian around its target (``sigma`` = 1 heatmap pixel),
    which trains much faster from scratch than the coordinates alone. Augmentation: random brightness/contrast and a
    random similarity transform (scale +-10 %, rotation +-10 degrees, translation +-6 % of the side) applied to image
    and landmarks alike (no flips, which would permute the iBUG indices).

    Args:
        images: ``(N, 3, H, W)`` RGB in [0, 1].
        landmarks: ``(N, n, 2)`` in pixels of those images.
        steps, batch_size, lr: Adam schedule (cosine decay to 0).
        config: network sizes (``num_landmarks`` must be ``n``).
        seed: of the initialisation and the batches.
        log: called as ``log(step, loss)`` every 50 steps.

    Returns:
        The trained network in eval mode, on the images' device.
    """
    if images.dim() != 4 or images.shape[1] != 3 or landmarks.dim() != 3 or landmarks.shape[0] != images.shape[0] \
            or landmarks.shape[2] != 2:
        raise InputShapeError(f"need images (N, 3, H, W) and landmarks (N, n, 2) of the same N; got "
                              f"{tuple(images.shape)} and {tuple(landmarks.shape)}")
    side = float(images.shape[-1])

    def check(net: HeatmapLandmarkNet) -> None:
        if landmarks.shape[1] != net.config.num_landmarks:
            raise InputShapeError(f"landmarks must have {net.config.num_landmarks} points; got {landmarks.shape[1]}")

    def recolour_and_move(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return _random_similarity(random_brightness_contrast(x, g), y, g)

    def loss(net: HeatmapLandmarkNet, x: Tensor, y: Tensor) -> Tensor:
        logits = net.heatmaps(x * 2 - 1)
        value = (net.soft_argmax(logits, x.shape[-2:]) - y).abs().mean() / side
        return value + _heatmap_cross_entropy(logits, y, x.shape[-2:], net.config.temperature)

    return train_network(lambda: HeatmapLandmarkNet(config or LandmarkNetConfig(num_landmarks=landmarks.shape[1])),
                         images, landmarks, loss, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         augment=recolour_and_move if augment else None, check=check, log=log)


def save_landmark_net(net: HeatmapLandmarkNet, path: str | os.PathLike) -> None:
    """Write ``net`` as safetensors with its config in the metadata."""
    save_network(net, path, _FORMAT)


def load_landmark_net(path: str | os.PathLike) -> HeatmapLandmarkNet:
    """A :class:`HeatmapLandmarkNet` from a file of :func:`save_landmark_net`, in eval mode on the CPU.

    Raises:
        WeightsNotFoundError: no file at ``path``.
        CheckpointError: not a landmark-network file, or its tensors do not match its config.
    """
    return load_network(path, _FORMAT, lambda c: HeatmapLandmarkNet(LandmarkNetConfig(**c)), name="landmark network",
                        kind="landmark-network", command="morphface.pipelines.landmark_net",
                        option="landmark_weights")
