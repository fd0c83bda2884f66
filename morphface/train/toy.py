"""A tiny conditional GAN and a synthetic dataset: the tests' training workload and a template.

``ToyShapesDataset`` draws, for item ``i``, a disc of random centre, radius and colour on a dark
background; the condition is the flat-coloured disc, the target the same disc with spherical
shading. ``ToyGANPipeline`` learns the shading (a pix2pix-style image-to-image task) with a
4-conv generator and a 3-conv conditional PatchGAN discriminator, L1 + non-saturating logistic
adversarial loss and optional instance noise (Gaussian noise on the discriminator's inputs, drawn
from the global torch RNG, which also makes the toy exercise RNG-state restore on resume). It
trains in seconds on a CPU, and it implements the whole protocol of
:mod:`morphface.train.protocol`, so a real pipeline can copy its shape: networks in an
``nn.ModuleDict`` called ``nets`` and called only through it, losses returned as
:class:`~morphface.train.protocol.StepResult`, a ``config_dict`` that rebuilds it, and a
``from_config`` factory registered by name (``toy_gan`` / ``toy_shapes`` in
:mod:`morphface.train.registry`).

Batches are dicts: ``cond`` and ``image`` ``(B, 3, H, W)`` in [0, 1], ``index`` ``(B,)`` int64.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .protocol import StepResult

__all__ = ["ToyShapesDataset", "ToyGenerator", "ToyDiscriminator", "ToyGANPipeline"]


def _from_config(cls, config: dict[str, Any]):
    try:
        return cls(**config)
    except TypeError as exc:  # an unknown or missing keyword: a config error, not a crash
        raise ValueError(f"bad config for {cls.__name__}: {exc}") from exc


class ToyShapesDataset(Dataset):
    """Synthetic shaded discs, a deterministic function of ``(seed, index)``.

    Args:
        size: number of items.
        image_size: side of the square images in pixels.
        seed: seed of the item generator (item ``i`` uses ``seed * 1_000_003 + i``).
    """

    def __init__(self, size: int = 64, image_size: int = 16, seed: int = 0) -> None:
        if size < 1 or image_size < 4:
            raise ValueError(f"need size >= 1 and image_size >= 4; got {size}, {image_size}")
        self.size, self.image_size, self.seed = size, image_size, seed

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ToyShapesDataset:
        """Registry factory: ``ToyShapesDataset(**config)``."""
        return _from_config(cls, config)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of {self.size} items")
        index %= self.size
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s = self.image_size
        centre = (0.3 + 0.4 * torch.rand(2, generator=g)) * s
        radius = (0.18 + 0.12 * torch.rand((), generator=g)) * s
        colour = 0.3 + 0.7 * torch.rand(3, generator=g)
        coords = torch.arange(s, dtype=torch.float32) + 0.5  # pixel centres
        dy = (coords[:, None] - centre[1]) / radius
        dx = (coords[None, :] - centre[0]) / radius
        r2 = dx.square() + dy.square()
        inside = (r2 < 1).float()
        shading = 0.35 + 0.65 * torch.sqrt((1 - r2).clamp_min(0))  # a sphere lit from the camera
        background = torch.full((3, 1, 1), 0.1)
        cond = inside * colour[:, None, None] + (1 - inside) * background
        image = inside * (colour[:, None, None] * shading) + (1 - inside) * background
        return {"cond": cond, "image": image, "index": torch.tensor(index)}


class ToyGenerator(nn.Module):
    """Four 3x3 convs, LeakyReLU, sigmoid output: ``(B, 3, H, W)`` [0, 1] -> ``(B, 3, H, W)`` [0, 1]."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 3, 3, padding=1),
        )

    def forward(self, cond: Tensor) -> Tensor:
        return torch.sigmoid(self.body(cond * 2 - 1))


class ToyDiscriminator(nn.Module):
    """Conditional PatchGAN: ``(image, cond)``, ``(B, 3, H, W)`` each in [0, 1] -> logits
    ``(B, 1, H/4, W/4)``."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(6, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 3, padding=1),
        )

    def forward(self, image: Tensor, cond: Tensor) -> Tensor:
        return self.body(torch.cat([image, cond], dim=1) * 2 - 1)


class ToyGANPipeline(nn.Module):
    """pix2pix-style toy pipeline implementing the training protocol.

    Args:
        channels: generator width.
        disc_channels: discriminator width.
        l1_weight: weight of the L1 reconstruction loss.
        adv_weight: weight of the generator's adversarial loss (0: no discriminator step at all).
        instance_noise: std of the Gaussian noise added to every discriminator input image (Sonderby et
            al. 2016), in [0, 1] image units; 0 = none.
    """

    def __init__(self, channels: int = 16, disc_channels: int = 16, l1_weight: float = 10.0,
                 adv_weight: float = 1.0, instance_noise: float = 0.0) -> None:
        super().__init__()
        self.channels, self.disc_channels = channels, disc_channels
        self.l1_weight, self.adv_weight = float(l1_weight), float(adv_weight)
        self.instance_noise = float(instance_noise)
        self.nets = nn.ModuleDict({"generator": ToyGenerator(channels),
                                   "discriminator": ToyDiscriminator(disc_channels)})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ToyGANPipeline:
        """Registry factory: ``ToyGANPipeline(**config)``."""
        return _from_config(cls, config)

    def config_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "disc_channels": self.disc_channels,
                "l1_weight": self.l1_weight, "adv_weight": self.adv_weight,
                "instance_noise": self.instance_noise}

    def networks(self) -> dict[str, nn.Module]:
        return dict(self.nets)

    @torch.no_grad()
    def generate(self, cond: Tensor) -> Tensor:
        """Inference: shaded images ``(B, 3, H, W)`` in [0, 1] from conditions ``(B, 3, H, W)`` in [0, 1]."""
        if cond.dim() != 4 or cond.shape[1] != 3:
            raise ValueError(f"cond must have shape (B, 3, H, W); got {tuple(cond.shape)}")
        return self.nets["generator"](cond)

    def _judge(self, image: Tensor, cond: Tensor) -> Tensor:
        if self.instance_noise > 0:
            image = image + self.instance_noise * torch.randn_like(image)
        return self.nets["discriminator"](image, cond)

    def generator_step(self, batch: dict[str, Tensor]) -> StepResult:
        cond, real = batch["cond"], batch["image"]
        fake = self.nets["generator"](cond)
        l1 = (fake - real).abs().mean()
        loss = self.l1_weight * l1
        logs = {"l1": l1.detach()}
        if self.adv_weight > 0:
            adv = F.softplus(-self._judge(fake, cond)).mean()
            loss = loss + self.adv_weight * adv
            logs["adv"] = adv.detach()
        return StepResult(loss, logs, {"fake": fake})

    def discriminator_step(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> StepResult | None:
        if self.adv_weight == 0:
            return None
        cond, real, fake = batch["cond"], batch["image"], outputs["fake"]
        # One forward on real and fake together: one graph per backward, fewer kernel launches.
        logits = self._judge(torch.cat([real, fake]), torch.cat([cond, cond]))
        real_logits, fake_logits = logits.chunk(2)
        loss_real = F.softplus(-real_logits).mean()
        loss_fake = F.softplus(fake_logits).mean()
        loss = 0.5 * (loss_real + loss_fake)
        return StepResult(loss, {"real": loss_real.detach(), "fake": loss_fake.detach()}, {})

    def visuals(self, batch: dict[str, Tensor], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"cond": batch["cond"], "fake": outputs["fake"], "real": batch["image"]}
