"""MMFA's expression VAE (§3.3): a continuous Gaussian latent space for the expression features ``f``.

Equations as read from the text (the extraction lost them):

* eq. 10: the encoder maps a feature to a diagonal Gaussian, ``(mu, log sigma^2) = E_vae(f)``
  (:meth:`ExpressionVAE.encode`: an MLP with two heads);
* eq. 11: the reparameterisation ``z = mu + sigma * eps``, ``eps ~ N(0, I)`` (:func:`reparameterize`);
* eq. 12: the decoder ``f_hat = D_vae(z)`` (:meth:`ExpressionVAE.decode`);
* eq. 13: ``L_vae = lambda_rec |f - f_hat|^2 + lambda_kl KL(N(mu, sigma^2) || N(0, I)) + lambda_adv L_adv``, with the
  closed-form KL (:func:`kl_divergence`) and a least-squares adversarial term from a small MLP
  :class:`FeatureDiscriminator` that tells the encoder's features ``f`` (real) from decoded ones (fake). The paper
  adds it because the KL term converges faster than the reconstruction and the decoder collapses to the mean
  expression; here the fakes are the decoder's outputs both for posterior samples and for prior samples
  ``z ~ N(0, I)`` (so that sampled expressions, not only reconstructions, must look like real ones).

Shapes: features ``(B, d)``, latents ``(B, d_z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ...errors import InputShapeError

__all__ = ["ExpressionVAEConfig", "ExpressionVAE", "VAEOutput", "FeatureDiscriminator", "kl_divergence",
           "reparameterize", "train_expression_vae"]


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` summed over the latent dimensions, mean over the batch.

    Closed form ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``; ``(B, d_z)`` inputs -> scalar >= 0.
    """
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise InputShapeError(f"mu and logvar must both be (B, d_z); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Eq. 11: ``mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` (from ``generator`` when given)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


class VAEOutput(NamedTuple):
    """Output of :meth:`ExpressionVAE.forward`: ``mu``, ``logvar``, ``z`` ``(B, d_z)``, ``feature`` ``(B, d)`` and
    ``prior_feature`` ``(N, d)`` (the decoded prior samples, ``None`` without them)."""

    mu: Tensor
    logvar: Tensor
    z: Tensor
    feature: Tensor
    prior_feature: Tensor | None = None


@dataclass(frozen=True)
class ExpressionVAEConfig:
    """Sizes of :class:`ExpressionVAE` and :class:`FeatureDiscriminator`.

    Attributes:
        feature_dim: ``d`` of the expression features.
        latent_dim: ``d_z`` (16).
        hidden: hidden width of the encoder, decoder and discriminator MLPs (128).
        num_layers: hidden layers of each MLP (2).
    """

    feature_dim: int = 128
    latent_dim: int = 16
    hidden: int = 128
    num_layers: int = 2


def _mlp(inp: int, hidden: int, layers: int) -> tuple[nn.Sequential, int]:
    mods: list[nn.Module] = []
    ch = inp
    for _ in range(layers):
        mods += [nn.Linear(ch, hidden), nn.LeakyReLU(0.2)]
        ch = hidden
    return nn.Sequential(*mods), ch


class ExpressionVAE(nn.Module):
    """``f -> (mu, logvar) -> z -> f_hat`` (module docstring)."""

    def __init__(self, config: ExpressionVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ExpressionVAEConfig()
        if cfg.latent_dim < 1 or cfg.feature_dim < 1:
            raise ValueError(f"latent_dim and feature_dim must be >= 1; got {cfg.latent_dim}, {cfg.feature_dim}")
        self.enc, ch = _mlp(cfg.feature_dim, cfg.hidden, cfg.num_layers)
        self.mu = nn.Linear(ch, cfg.latent_dim)
        self.logvar = nn.Linear(ch, cfg.latent_dim)
        dec, ch = _mlp(cfg.latent_dim, cfg.hidden, cfg.num_layers)
        self.dec = nn.Sequential(*dec, nn.Linear(ch, cfg.feature_dim))

    def _check(self, x: Tensor, dim: int, name: str) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputShapeError(f"{name} must have shape (B, {dim}); got {shape}")

    def encode(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 10: ``(B, d)`` features -> ``mu, logvar`` ``(B, d_z)`` (``logvar`` clamped to [-10, 10])."""
        self._check(feature, self.config.feature_dim, "expression feature")
        h = self.enc(feature)
        return self.mu(h), self.logvar(h).clamp(-10.0, 10.0)

    def decode(self, z: Tensor) -> Tensor:
        """Eq. 12: ``(B, d_z)`` latents -> ``(B, d)`` features."""
        self._check(z, self.config.latent_dim, "expression latent z")
        return self.dec(z)

    def forward(self, feature: Tensor, generator: torch.Generator | None = None,
                prior: Tensor | None = None) -> VAEOutput:
        """Encode, sample (eq. 11) and decode ``(B, d)`` features; :class:`VAEOutput`.

        Args:
            feature: ``(B, d)``.
            generator: for the reparameterisation noise.
            prior: optional ``(N, d_z)`` latents (e.g. prior samples) decoded in the same decoder call.
        """
        mu, logvar = self.encode(feature)
        z = reparameterize(mu, logvar, generator)
        if prior is None:
            return VAEOutput(mu, logvar, z, self.decode(z))
        self._check(prior, self.config.latent_dim, "prior latents")
        f = self.decode(torch.cat([z, prior.to(z)]))
        return VAEOutput(mu, logvar, z, f[:z.shape[0]], f[z.shape[0]:])


class FeatureDiscriminator(nn.Module):
    """MLP critic of expression features: ``(B, d)`` -> ``(B, 1)`` logits (the adversarial term of eq. 13)."""

    def __init__(self, config: ExpressionVAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ExpressionVAEConfig()
        body, ch = _mlp(cfg.feature_dim, cfg.hidden, cfg.num_layers)
        self.net = nn.Sequential(*body, nn.Linear(ch, 1))

    def forward(self, feature: Tensor) -> Tensor:
        """``(B, d)`` -> ``(B, 1)``."""
        d = self.config.feature_dim
        if not isinstance(feature, Tensor) or feature.dim() != 2 or feature.shape[1] != d:
            shape = tuple(feature.shape) if isinstance(feature, Tensor) else type(feature).__name__
            raise InputShapeError(f"expression feature must have shape (B, {d}); got {shape}")
        return self.net(feature)


def train_expression_vae(features: Tensor, config: ExpressionVAEConfig | None = None, *, steps: int = 500,
                         batch_size: int = 32, lr: float = 1e-3, lambda_reconstruction: float = 1.0,
                         lambda_kl: float = 0.01, lambda_adversarial: float = 0.1,
                         seed: int = 0) -> tuple[ExpressionVAE, FeatureDiscriminator]:
    """Train an :class:`ExpressionVAE` on a fixed set of expression features (eq. 13, outside the trainer).

    The same losses as the pipeline's VAE stage (:mod:`morphface.pipelines.mmfa`): ``lambda_reconstruction`` MSE +
    ``lambda_kl`` KL + ``lambda_adversarial`` least-squares GAN on decoded posterior and prior samples, the
    :class:`FeatureDiscriminator` updated after each VAE step.

    Args:
        features: ``(N, d)`` features (e.g. :meth:`morphface.pipelines.MMFA.expression_feature` of frames).
        config: sizes (``feature_dim`` must be ``d``; default: ``d`` with the other defaults).

    Returns:
        The VAE and its discriminator, in eval mode.
    """
    if features.dim() != 2:
        raise InputShapeError(f"features must be (N, d); got {tuple(features.shape)}")
    cfg = config or ExpressionVAEConfig(feature_dim=features.shape[1])
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae, disc = ExpressionVAE(cfg).to(features), FeatureDiscriminator(cfg).to(features)
    if features.shape[1] != cfg.feature_dim:
        raise InputShapeError(f"features must have {cfg.feature_dim} values each; got {features.shape[1]}")
    opt_v = torch.optim.Adam(vae.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    n = features.shape[0]
    for _ in range(steps):
        f = features[torch.randint(n, (min(batch_size, n),), generator=g).to(features.device)]
        prior = torch.randn(f.shape[0], cfg.latent_dim, generator=g).to(f)
        noise = torch.Generator().manual_seed(int(torch.randint(2 ** 31, (1,), generator=g)))
        out = vae(f, generator=noise if f.device.type == "cpu" else None, prior=prior)
        fakes = torch.cat([out.feature, out.prior_feature])
        loss = lambda_reconstruction * (out.feature - f).pow(2).mean() + lambda_kl * kl_divergence(out.mu, out.logvar)
        if lambda_adversarial > 0:
            loss = loss + lambda_adversarial * (disc(fakes) - 1).pow(2).mean()
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        opt_v.step()
        if lambda_adversarial > 0:
            logits = disc(torch.cat([f, fakes.detach()]))
            d_loss = (logits[:f.shape[0]] - 1).pow(2).mean() + logits[f.shape[0]:].pow(2).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
    return vae.eval(), disc.eval()
