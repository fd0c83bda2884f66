"""The protocol a pipeline implements to be trained by :class:`~morphface.train.trainer.Trainer`.

It is duck-typed: a pipeline needs no base class, only these members (``morphface.train.toy`` is a
complete, tiny example to copy from).

``nets: torch.nn.ModuleDict`` (attribute)
    The trainable networks by name, e.g. ``{"generator": G, "discriminator": D}``. The pipeline calls
    its networks **only through this dict** (``self.nets["generator"](x)``, never a private alias):
    while training, the trainer replaces its entries by the wrapped modules
    (``DistributedDataParallel`` and/or ``torch.compile``) and puts the plain modules back when
    training ends or fails. Checkpoints always hold the plain modules' ``state_dict()``, so their keys
    never carry a ``module.`` / ``_orig_mod.`` prefix. Optional for a pipeline trained single-process
    without ``compile`` (nothing is wrapped then); required otherwise.

``networks() -> dict[str, nn.Module]``
    The same plain modules (normally ``dict(self.nets)``). The trainer makes one Adam optimiser per
    network that has trainable parameters, wraps it in DDP when distributed, and keeps an EMA copy of
    ``"generator"`` when ``ema_decay > 0``.

``discriminator_names() -> Collection[str]`` (optional)
    The networks updated by the discriminator step; all others are updated by the generator step.
    Default: the networks whose name contains ``"discriminator"``.

``generator_step(batch) -> StepResult``
    Forward pass and losses of the generator update; ``batch`` is the collated dataset batch, already
    on the training device. It runs under autocast when AMP is on.

``discriminator_step(batch, outputs) -> StepResult | None``
    Losses of the discriminator update. ``outputs`` is the generator step's ``outputs`` dict with
    every tensor **detached** (the fake images: the step must not call the generator networks again
    with grad enabled). Return ``None`` when the pipeline has no discriminator (nothing is stepped).

``visuals(batch, outputs) -> dict[str, Tensor]``
    Images for the grids logged every ``image_every`` steps: ``(B, 3, H, W)`` (or ``(B, 1, H, W)``)
    in [0, 1]. Called on rank 0 only, under ``torch.no_grad()``, with the plain (unwrapped) networks.

``config_dict() -> dict``
    A JSON-serialisable dict from which the pipeline's registered factory rebuilds an identical
    (untrained) pipeline: ``build_pipeline(name, pipeline.config_dict())``. Stored in checkpoints.

``set_step(step: int) -> None`` (optional)
    Called before every step with the 0-based index of the step about to run (for loss-weight or
    curriculum schedules; derived from the step only, so resuming keeps it exact).

``train()`` / ``eval()`` / ``to(device)`` (optional)
    Used when present (an ``nn.Module`` pipeline has them); otherwise the trainer applies them to
    ``networks()``. Any other state the pipeline holds (frozen feature extractors, ...) is not
    checkpointed: it must be rebuilt by the factory.

**The update order of one step** (:meth:`Trainer._train_step`): zero the generator group's grads,
``generator_step``, all-reduce and check the losses (NaN/inf stops training), backward, clip, step
the generator group's optimisers, update the EMA; then ``discriminator_step`` on the detached outputs,
zero the discriminator group's grads (discarding those the generator loss put there), backward, clip,
step. Under DDP the discriminators run inside ``no_sync()`` during the generator phase (their grads
there are discarded, so they need no all-reduce) and the generator group inside ``no_sync()`` during
the discriminator phase; every wrapped module thus has at most one synchronised backward per forward
phase.

``StepResult`` is a plain named tuple; because pipelines sit below ``train`` in the layer order and
must not import it, the trainer accepts any object with ``loss``, ``logs`` and ``outputs`` attributes
or a ``(loss, logs, outputs)`` tuple.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["StepResult", "TrainablePipeline", "as_step_result", "discriminator_names", "pipeline_networks"]


class StepResult(NamedTuple):
    """What a generator or discriminator step returns.

    Attributes:
        loss: scalar tensor (0-dim) to minimise; must require grad.
        logs: loss terms for logging, name -> float or 0-dim tensor (tensors are preferred: the trainer
            all-reduces them across ranks in one transfer). Every rank must report the same names.
        outputs: tensors the discriminator step and ``visuals`` need (fake images, ...), name -> tensor.
    """

    loss: Tensor
    logs: dict[str, float | Tensor]
    outputs: dict[str, Tensor]


@runtime_checkable
class TrainablePipeline(Protocol):
    """Structural type of a trainable pipeline; see the module docstring for the full contract."""

    def networks(self) -> dict[str, nn.Module]: ...

    def generator_step(self, batch: Any) -> StepResult: ...

    def discriminator_step(self, batch: Any, outputs: dict[str, Tensor]) -> StepResult | None: ...

    def visuals(self, batch: Any, outputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def config_dict(self) -> dict[str, Any]: ...


_REQUIRED = ("networks", "generator_step", "discriminator_step", "visuals", "config_dict")


def check_pipeline(pipeline: Any) -> None:
    """Raise ``TypeError`` naming the protocol members ``pipeline`` lacks."""
    missing = [m for m in _REQUIRED if not callable(getattr(pipeline, m, None))]
    if missing:
        raise TypeError(f"{type(pipeline).__name__} does not implement the training protocol: missing "
                        f"{', '.join(missing)} (see morphface.train.protocol)")


def pipeline_networks(pipeline: Any) -> dict[str, nn.Module]:
    """``pipeline.networks()`` checked: a non-empty dict of ``nn.Module`` by string name."""
    nets = pipeline.networks()
    if not isinstance(nets, Mapping) or not nets:
        raise TypeError(f"{type(pipeline).__name__}.networks() must return a non-empty dict of name -> "
                        f"nn.Module; got {nets!r}")
    for name, net in nets.items():
        if not isinstance(name, str) or not isinstance(net, nn.Module):
            raise TypeError(f"{type(pipeline).__name__}.networks() must map str -> nn.Module; got "
                            f"{name!r} -> {type(net).__name__}")
    return dict(nets)


def discriminator_names(pipeline: Any, names: Collection[str]) -> set[str]:
    """The networks of ``names`` stepped by the discriminator update (see the module docstring)."""
    fn = getattr(pipeline, "discriminator_names", None)
    chosen = set(fn()) if callable(fn) else {n for n in names if "discriminator" in n.lower()}
    unknown = chosen - set(names)
    if unknown:
        raise ValueError(f"discriminator_names() lists {sorted(unknown)}, which are not among the networks "
                         f"{sorted(names)}")
    return chosen


def as_step_result(result: Any, what: str) -> StepResult:
    """Normalise a step's return value (``StepResult``, any object with the three attributes, or a
    ``(loss, logs, outputs)`` tuple) and check its types; ``what`` names the step in errors."""
    if all(hasattr(result, a) for a in ("loss", "logs", "outputs")):
        loss, logs, outputs = result.loss, result.logs, result.outputs
    elif isinstance(result, tuple) and len(result) == 3:
        loss, logs, outputs = result
    else:
        raise TypeError(f"{what} must return a StepResult(loss, logs, outputs); got {type(result).__name__}")
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"{what}: loss must be a scalar tensor (shape () or (1,)); got {shape}")
    logs = dict(logs or {})
    outputs = dict(outputs or {})
    for k, v in logs.items():
        scalar = isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.numel() == 1)
        if not isinstance(k, str) or not scalar:
            raise ValueError(f"{what}: logs must map str -> float or 1-element tensor; got {k!r} -> {v!r}")
    return StepResult(loss.reshape(()), logs, outputs)
