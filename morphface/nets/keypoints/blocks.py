"""2D and 3D residual, down/up-sampling and hourglass blocks of the keypoint networks (face-vid2vid style).

Every block keeps the layout of FOMM/face-vid2vid: ``conv -> norm -> ReLU`` units with (affine)
instance or batch norm replaced here by affine instance norm (batch-size independent, as the library's
other generators). Inputs are ``(B, C, H, W)`` (2D) or ``(B, C, D, H, W)`` (3D) float tensors of any
device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResBlock2d", "ResBlock3d", "DownBlock2d", "UpBlock2d", "DownBlock3d", "UpBlock3d", "Hourglass3d",
           "Hourglass2d"]


class ResBlock2d(nn.Module):
    """``x + conv(relu(norm(conv(relu(norm(x))))))`` with 3x3 convs; channels kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        y = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(y)))


class ResBlock3d(nn.Module):
    """The 3D counterpart of :class:`ResBlock2d` (3x3x3 convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = nn.InstanceNorm3d(channels, affine=True)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.InstanceNorm3d(channels, affine=True)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W)`` -> same shape."""
        y = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(y)))


class DownBlock2d(nn.Module):
    """``conv3x3 -> norm -> ReLU -> avg-pool 2``: ``(B, C_in, H, W)`` -> ``(B, C_out, H/2, W/2)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class UpBlock2d(nn.Module):
    """``nearest x2 -> conv3x3 -> norm -> ReLU``: ``(B, C_in, H, W)`` -> ``(B, C_out, 2H, 2W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))))


class DownBlock3d(nn.Module):
    """``conv3x3x3 -> norm -> ReLU -> avg-pool (1, 2, 2)``: halves H and W, keeps the depth."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.InstanceNorm3d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), (1, 2, 2))


class UpBlock3d(nn.Module):
    """``nearest (1, 2, 2) -> conv3x3x3 -> norm -> ReLU``: doubles H and W, keeps the depth."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.InstanceNorm3d(out_channels, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest"))))


class _Hourglass(nn.Module):
    """U-Net of ``num_blocks`` down and up blocks with skip concatenation (FOMM's ``Hourglass``)."""

    def __init__(self, down: type[nn.Module], up: type[nn.Module], in_channels: int, base_channels: int,
                 num_blocks: int, max_channels: int) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1; got {num_blocks}")
        chans = [in_channels] + [min(max_channels, base_channels * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down = nn.ModuleList([down(chans[i], chans[i + 1]) for i in range(num_blocks)])
        ups = []
        for i in reversed(range(num_blocks)):
            cin = chans[i + 1] * (1 if i == num_blocks - 1 else 2)
            ups.append(up(cin, chans[i] if i > 0 else base_channels))
        self.up = nn.ModuleList(ups)
        #: channels of the output: the last up block's plus the input's
        self.out_channels = base_channels + in_channels
        self.multiple = 2 ** num_blocks

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(f"hourglass input height and width must be multiples of {self.multiple}; got "
                             f"{tuple(x.shape)}")
        skips = [x]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = torch.cat([block(y), skips.pop()], dim=1)
        return y


class Hourglass2d(_Hourglass):
    """2D U-Net: ``(B, C_in, H, W)`` -> ``(B, base_channels + C_in, H, W)``; H, W multiples of ``2^num_blocks``."""

    def __init__(self, in_channels: int, base_channels: int, num_blocks: int = 3, max_channels: int = 256) -> None:
        super().__init__(DownBlock2d, UpBlock2d, in_channels, base_channels, num_blocks, max_channels)


class Hourglass3d(_Hourglass):
    """3D U-Net down-sampling H and W only: ``(B, C_in, D, H, W)`` -> ``(B, base_channels + C_in, D, H, W)``."""

    def __init__(self, in_channels: int, base_channels: int, num_blocks: int = 3, max_channels: int = 256) -> None:
        super().__init__(DownBlock3d, UpBlock3d, in_channels, base_channels, num_blocks, max_channels)
