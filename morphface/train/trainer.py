"""The generic GAN trainer: single process, multi-GPU and multi-node (``torchrun``) with DDP.

:class:`Trainer` trains any pipeline that implements :mod:`morphface.train.protocol` on a registered
dataset, as configured by a :class:`~morphface.train.config.TrainConfig`:

* **Processes.** Launched plainly it trains in one process; under ``torchrun`` every process trains
  on ``batch_size`` samples of its ``DistributedSampler`` share, networks wrapped in
  ``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU). Only rank 0 writes files and logs.
* **One step.** See the protocol's update order: generator phase (backward, clip, Adam, EMA) then
  discriminator phase on the detached outputs. Losses and log terms are averaged over ranks in one
  all-reduce per phase; a NaN/inf loss on any rank stops every rank with
  :class:`~morphface.errors.TrainingDivergedError` before the bad gradients are applied, leaving the
  last checkpoint untouched.
* **Checkpoints** (:mod:`morphface.train.checkpoint`): every ``checkpoint_every`` steps and after the
  last one, atomically, the last ``keep_last`` kept; written by rank 0 between barriers, RNG states
  gathered from every rank.
* **Resume** restores the weights, the optimisers, the grad scaler, the EMA, the data position
  (epoch and samples consumed in it: the sampler skips exactly those) and every rank's torch / CUDA /
  numpy / ``random`` RNG state. With ``deterministic: true`` and ``num_workers: 0`` a resumed run
  repeats the uninterrupted run's losses exactly (tested). With workers, exactness additionally needs a
  dataset whose items depend only on their index (worker RNG seeds are fixed per epoch, but which
  worker loads which item shifts after a mid-epoch resume).
* **Records**: ``metrics.jsonl`` (every step), TensorBoard scalars and image grids under ``tb/``, PNG
  grids under ``images/``, a summary line every ``log_every`` steps and a tqdm bar on rank 0.

Hooks ``hook(trainer, step, record)`` run on every rank after each step (after logging, before that
step's checkpoint), e.g. for evaluation; ``step`` counts the steps done.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import CheckpointError, TrainingDivergedError
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointInfo,
    list_checkpoints,
    load_network_state,
    prune_checkpoints,
    read_record,
    read_weights,
    remove_temp_files,
    resolve_checkpoint,
    split_prefix,
    write_checkpoint,
)
from .config import TrainConfig, save_config
from .distributed import all_gather_objects, barrier, broadcast_object, cleanup_distributed, init_distributed
from .ema import EMA
from .monitor import MetricsLog, TensorBoardLog, image_grid, save_png
from .protocol import StepResult, as_step_result, check_pipeline, discriminator_names, pipeline_networks
from .registry import build_dataset, build_pipeline, import_modules
from .sampler import ResumableDistributedSampler
from .state import capture_rng, pack, restore_rng, seed_everything, unpack

__all__ = ["Trainer", "TrainSummary", "Hook"]

Hook = Callable[["Trainer", int, dict[str, Any]], None]


class TrainSummary(NamedTuple):
    """What :meth:`Trainer.fit` returns.

    Attributes:
        step: steps done (``config.steps`` unless stopped early).
        checkpoint: weights file of the last checkpoint written (``None`` on ranks other than 0 and when
            nothing was written).
        metrics: the last step's record (as in ``metrics.jsonl``); empty if no step ran.
    """

    step: int
    checkpoint: Path | None
    metrics: dict[str, Any]


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _detach(outputs: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in outputs.items()}


def _cpu_state(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    # copy=True: safetensors refuses tensors that share storage, and CPU tensors would alias the model.
    return {f"{prefix}.{k}": v.detach().to("cpu", copy=True).contiguous()
            for k, v in module.state_dict().items()}


class Trainer:
    """Train the configured pipeline; see the module docstring.

    Args:
        config: the run configuration.
        hooks: callables ``hook(trainer, step, record)`` run after every step on every rank.

    Attributes (valid during and after :meth:`fit`):
        pipeline: the pipeline being trained.
        networks: its plain (unwrapped) networks by name.
        wrapped: the modules installed in ``pipeline.nets`` while training (DDP / compiled or plain).
        optimizers: one Adam per network with trainable parameters.
        ema: the generator's :class:`~morphface.train.ema.EMA` or ``None``.
        step: steps done.
        epoch / epoch_index: the data position (epoch, samples of this rank consumed in it).
        dist: this process's :class:`~morphface.train.distributed.DistInfo`.
        output_dir: the run folder.
    """

    def __init__(self, config: TrainConfig, *, hooks: Sequence[Hook] = ()) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig; got {type(config).__name__}")
        self.config = config
        self.hooks = list(hooks)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.step = 0
        self.epoch = 0
        self.epoch_index = 0
        self.ema: EMA | None = None
        self.last_checkpoint: Path | None = None
        self._metrics: MetricsLog | None = None
        self._tb: TensorBoardLog | None = None
        self._bar = None
        self._installed = False

    # ------------------------------------------------------------------ public
    def fit(self, resume: bool | str | Path = False) -> TrainSummary:
        """Train up to ``config.steps`` steps.

        Args:
            resume: ``False``: a fresh run (refused if ``output_dir`` already holds checkpoints);
                ``True``: continue from the newest complete checkpoint in ``output_dir`` (a fresh run if
                there is none); a path: continue from that checkpoint (weights file, record or folder).

        Returns:
            :class:`TrainSummary`.

        Raises:
            TrainingDivergedError: a loss became NaN/inf (the last checkpoint stays valid).
            CheckpointError: the checkpoint to resume from does not match the pipeline.
        """
        # Process-global switches this run sets, restored afterwards for callers that go on in-process.
        saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                 torch.backends.cudnn.benchmark)
        self.dist = init_distributed(self.config.device)
        try:
            self._setup(resume)
            return self._loop()
        finally:
            self._teardown()
            torch.use_deterministic_algorithms(saved[0])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]
            cleanup_distributed(self.dist)

    @contextlib.contextmanager
    def raw_networks(self) -> Iterator[None]:
        """Inside, ``pipeline.nets`` holds the plain networks (no DDP collectives, no compile)."""
        was = self._installed
        self._install(False)
        try:
            yield
        finally:
            self._install(was)

    # ------------------------------------------------------------------ set-up
    def _setup(self, resume: bool | str | Path) -> None:
        cfg, info = self.config, self.dist
        self.device = info.device
        self.step = self.epoch = self.epoch_index = 0
        self.ema, self.last_checkpoint, self._wrapping = None, None, False
        if cfg.deterministic:
            if self.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True

        resume_info = self._find_resume(resume)

        import_modules(cfg.imports)
        seed_everything(cfg.seed)  # identical initial weights on every rank
        self.pipeline = build_pipeline(cfg.pipeline.name, cfg.pipeline.config)
        check_pipeline(self.pipeline)
        self.networks = pipeline_networks(self.pipeline)
        for name in self.networks:
            if "." in name:
                raise ValueError(f"network names must not contain '.' (checkpoint keys are name.param); "
                                 f"got {name!r}")
        d_names = discriminator_names(self.pipeline, self.networks)
        trainable = {n for n, m in self.networks.items() if any(p.requires_grad for p in m.parameters())}
        if not trainable:
            raise ValueError("the pipeline's networks have no trainable parameters")
        self.g_group = [n for n in self.networks if n in trainable and n not in d_names]
        self.d_group = [n for n in self.networks if n in trainable and n in d_names]
        unknown_lr = set(cfg.network_lr) - set(self.networks)
        if unknown_lr:
            raise ValueError(f"network_lr names {sorted(unknown_lr)} are not networks of the pipeline "
                             f"({sorted(self.networks)})")

        if isinstance(self.pipeline, nn.Module):
            self.pipeline.to(self.device)
        else:
            for m in self.networks.values():
                m.to(self.device)
        self._set_train(True)

        if cfg.ema_decay > 0:
            if "generator" not in self.networks:
                raise ValueError(f"ema_decay > 0 needs a network named 'generator'; the pipeline has "
                                 f"{sorted(self.networks)}")
            self.ema = EMA(self.networks["generator"], cfg.ema_decay)
        self.optimizers = {
            n: torch.optim.Adam([p for p in self.networks[n].parameters() if p.requires_grad],
                                lr=cfg.network_lr.get(n, cfg.lr), betas=cfg.betas)
            for n in self.networks if n in trainable
        }
        self.amp = cfg.amp
        if self.amp != "off" and self.device.type != "cuda":
            warnings.warn(f"amp={self.amp!r} needs CUDA; training in float32 on {self.device}", stacklevel=3)
            self.amp = "off"
        if self.amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise ValueError("amp='bf16' is not supported by this GPU; use amp='fp16'")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")

        self._setup_data()

        if resume_info is not None:
            self._load_state(resume_info)
        else:
            seed_everything(cfg.seed + 1 + info.rank)  # distinct training RNG streams per rank

        self._wrap()
        if info.is_main:
            self._open_records(resumed=resume_info is not None)
        barrier(info)

    def _find_resume(self, resume: bool | str | Path) -> CheckpointInfo | None:
        """Rank 0 picks the checkpoint (or fails); every rank gets the same answer or the same error,
        so that no rank waits forever in a collective that a failed rank 0 never joins."""
        info = self.dist
        payload: dict[str, Any] = {}
        if info.is_main:
            try:
                payload["choice"] = self._choose_checkpoint(resume)
            except (FileExistsError, CheckpointError) as exc:
                payload["error"] = (type(exc).__name__, str(exc))
                broadcast_object(info, payload)
                raise
        payload = broadcast_object(info, payload)
        if "error" in payload:
            kind, text = payload["error"]
            raise (FileExistsError if kind == "FileExistsError" else CheckpointError)(text)
        if payload["choice"] is None:
            return None
        found = read_record(payload["choice"])
        if found is None:
            raise CheckpointError(f"checkpoint record {payload['choice']} is incomplete")
        return found

    def _choose_checkpoint(self, resume: bool | str | Path) -> str | None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        for p in remove_temp_files(self.checkpoint_dir):
            self._print(f"removed an incomplete checkpoint file left by an interrupted run: {p.name}")
        existing = list_checkpoints(self.checkpoint_dir)
        if resume is False:
            if existing:
                raise FileExistsError(
                    f"{self.output_dir} already holds checkpoints (newest: step {existing[-1].step}); "
                    f"pass resume=True (--resume) to continue that run or choose another output_dir")
            return None
        if resume is True:
            if not existing:
                self._print(f"no checkpoint in {self.checkpoint_dir}: starting a new run")
                return None
            return str(existing[-1].record_path)
        weights = resolve_checkpoint(resume)
        record = weights.with_name(weights.name.replace(".safetensors", ".json"))
        if not record.is_file():
            raise CheckpointError(f"resuming needs the complete checkpoint of {weights}: {record} is missing")
        return str(record)

    def _setup_data(self) -> None:
        cfg, info = self.config, self.dist
        self.dataset = build_dataset(cfg.data.name, cfg.data.config)
        if isinstance(self.dataset, torch.utils.data.IterableDataset) or not hasattr(self.dataset, "__len__"):
            raise TypeError(f"dataset {cfg.data.name!r} must be a map-style Dataset with __len__ and "
                            f"__getitem__ (resuming needs indexed sampling); got "
                            f"{type(self.dataset).__name__}")
        self.sampler = ResumableDistributedSampler(self.dataset, info.world_size, info.rank, cfg.seed)
        if self.sampler.num_samples < cfg.batch_size:
            raise ValueError(f"dataset {cfg.data.name!r} has {len(self.dataset)} items: "
                             f"{self.sampler.num_samples} per process for {info.world_size} process(es), "
                             f"fewer than batch_size={cfg.batch_size}")
        self._loader_generator = torch.Generator()
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            drop_last=True, pin_memory=self.device.type == "cuda", generator=self._loader_generator,
            collate_fn=getattr(self.dataset, "collate_fn", None))

    def _wrap(self) -> None:
        cfg, info = self.config, self.dist
        self.wrapped: dict[str, nn.Module] = dict(self.networks)
        self._ddp: dict[str, nn.parallel.DistributedDataParallel] = {}
        self._wrapping = info.distributed or cfg.compile
        if not self._wrapping:
            return
        nets = getattr(self.pipeline, "nets", None)
        if (not isinstance(nets, nn.ModuleDict) or set(nets) != set(self.networks)
                or any(nets[n] is not m for n, m in self.networks.items())):
            raise TypeError(f"{type(self.pipeline).__name__} must keep its networks in an nn.ModuleDict "
                            f"attribute 'nets' equal to networks() (the trainer swaps in the DDP/compiled "
                            f"modules there); see morphface.train.protocol")
        for name in self.optimizers:
            module: nn.Module = self.networks[name]
            if info.distributed:
                ids = [self.device.index] if self.device.type == "cuda" else None
                module = nn.parallel.DistributedDataParallel(
                    module, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters,
                    static_graph=cfg.static_graph)
                self._ddp[name] = module
            if cfg.compile:
                module = torch.compile(module)
            self.wrapped[name] = module
        self._install(True)

    def _install(self, wrapped: bool) -> None:
        if not getattr(self, "_wrapping", False):
            return
        nets = self.pipeline.nets
        for name in self.optimizers:
            nets[name] = self.wrapped[name] if wrapped else self.networks[name]
        self._installed = wrapped

    def _set_train(self, mode: bool) -> None:
        if callable(getattr(self.pipeline, "train", None)):
            self.pipeline.train(mode)
        else:
            for m in self.networks.values():
                m.train(mode)

    def _open_records(self, resumed: bool) -> None:
        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.output_dir / "config.yaml")
        self._metrics = MetricsLog(self.output_dir / "metrics.jsonl",
                                   truncate_after=self.step if resumed else None)
        if cfg.tensorboard:
            self._tb = TensorBoardLog(self.output_dir / "tb", purge_step=self.step + 1 if resumed else None)
        if cfg.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)

    def _teardown(self) -> None:
        if getattr(self, "pipeline", None) is not None:
            self._install(False)
        for closer in (self._bar, self._metrics, self._tb):
            if closer is not None:
                closer.close()
        self._bar = self._metrics = self._tb = None

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[Any]:
        while True:
            self.sampler.set_position(self.epoch, min(self.epoch_index, self.sampler.num_samples))
            # Worker seeds come from this generator: fixed per (seed, epoch, rank), and the global RNG
            # is not consumed by creating the iterator (which would break exact resume).
            seed = (self.config.seed + 1) * 1_000_003 + self.epoch * 7919 + self.dist.rank
            self._loader_generator.manual_seed(seed)
            # datasets that draw per-epoch randomness (e.g. which source frame pairs with a driving
            # frame) learn the epoch before the workers copy them for this epoch's iterator
            set_epoch = getattr(self.loader.dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(self.epoch)
            for batch in self.loader:
                self.epoch_index += self.config.batch_size
                yield batch
            self.epoch += 1
            self.epoch_index = 0

    def _loop(self) -> TrainSummary:
        if self.step >= self.config.steps:
            self._print(f"nothing to do: {self.step} steps done, config.steps = {self.config.steps}")
            return TrainSummary(self.step, self.last_checkpoint, {})
        batches = self._batches()
        try:
            return self._run_steps(batches)
        finally:
            batches.close()  # shuts the DataLoader's workers down now, also on an error

    def _run_steps(self, batches: Iterator[Any]) -> TrainSummary:
        cfg = self.config
        record: dict[str, Any] = {}
        window: dict[str, list[float]] = {}  # per-key [sum, count] since the last summary line
        window_start, window_steps = time.perf_counter(), 0
        while self.step < cfg.steps:
            t0 = time.perf_counter()
            batch = _to_device(next(batches), self.device)
            set_step = getattr(self.pipeline, "set_step", None)
            if callable(set_step):
                set_step(self.step)
            record, outputs = self._train_step(batch)
            self.step += 1
            record = {"step": self.step, "epoch": self.epoch, **record, "sec": time.perf_counter() - t0}
            window_steps += 1
            if self.dist.is_main:
                self._metrics.write(record)
                for k, v in record.items():
                    if isinstance(v, float) and k != "sec":
                        acc = window.setdefault(k, [0.0, 0])
                        acc[0] += v
                        acc[1] += 1
                if self._bar is not None:
                    self._bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
                    self._log_summary({k: a / n for k, (a, n) in window.items()}, rate)
                    window.clear()
                    window_start, window_steps = time.perf_counter(), 0
                if cfg.image_every and self.step % cfg.image_every == 0:
                    self._log_images(batch, outputs)
            for hook in self.hooks:
                hook(self, self.step, record)
            if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        return TrainSummary(self.step, self.last_checkpoint, record)

    def _autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    def _no_sync(self, names: Sequence[str]) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        for n in names:
            if n in self._ddp:
                stack.enter_context(self._ddp[n].no_sync())
        return stack

    def _reduce(self, result: StepResult, phase: str) -> tuple[float, dict[str, float]]:
        """Average the loss and log terms over ranks (one all-reduce) and stop on a non-finite loss."""
        names = sorted(result.logs)
        vals = torch.stack([result.loss.detach().float().reshape(())] + [
            torch.as_tensor(result.logs[k], dtype=torch.float32, device=self.device).detach().reshape(())
            for k in names])
        if self.dist.distributed:
            dist.all_reduce(vals)
            vals = vals / self.dist.world_size
        loss, *terms = vals.tolist()
        logs = dict(zip(names, terms))
        if not math.isfinite(loss):
            where = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint is not None
                     else "no checkpoint was written yet")
            terms_text = ", ".join(f"{k}={v:.4g}" for k, v in logs.items()) or "none"
            raise TrainingDivergedError(
                f"training diverged at step {self.step + 1}/{self.config.steps}: the {phase} loss is {loss} "
                f"(terms: {terms_text}); {where}. Resume from it with a lower lr, grad_clip or amp off.")
        return loss, logs

    def _backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler.is_enabled() else loss).backward()

    def _clip_and_step(self, names: Sequence[str]) -> dict[str, float]:
        if self.scaler.is_enabled():
            for n in names:
                self.scaler.unscale_(self.optimizers[n])
        norms = {}
        if self.config.grad_clip:
            raw = [torch.nn.utils.clip_grad_norm_(self.optimizers[n].param_groups[0]["params"],
                                                  self.config.grad_clip) for n in names]
            norms = {f"grad_norm/{n}": v for n, v in zip(names, torch.stack(raw).tolist())} if raw else {}
        for n in names:
            if self.scaler.is_enabled():
                self.scaler.step(self.optimizers[n])
            else:
                self.optimizers[n].step()
        return norms

    def _train_step(self, batch: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        record: dict[str, Any] = {}
        # Generator phase. The discriminators' grads from this backward are discarded, so their DDP
        # wrappers skip the all-reduce (no_sync) and the grads are zeroed before their own backward.
        for n in self.g_group:
            self.optimizers[n].zero_grad(set_to_none=True)
        with self._no_sync(self.d_group):
            with self._autocast():
                res_g = as_step_result(self.pipeline.generator_step(batch), "generator_step")
            record["g_loss"], logs = self._reduce(res_g, "generator")
            record.update({f"g/{k}": v for k, v in logs.items()})
            self._backward(res_g.loss)
        record.update(self._clip_and_step(self.g_group))
        if self.ema is not None:
            self.ema.update()
        outputs = _detach(res_g.outputs)
        del res_g

        # Discriminator phase, on the detached generator outputs.
        with self._no_sync(self.g_group):
            with self._autocast():
                res_d = self.pipeline.discriminator_step(batch, outputs)
            if res_d is not None:
                res_d = as_step_result(res_d, "discriminator_step")
                record["d_loss"], logs = self._reduce(res_d, "discriminator")
                record.update({f"d/{k}": v for k, v in logs.items()})
                for n in self.d_group:
                    self.optimizers[n].zero_grad(set_to_none=True)
                self._backward(res_d.loss)
        if res_d is not None:
            record.update(self._clip_and_step(self.d_group))
        if self.scaler.is_enabled():
            self.scaler.update()
            record["amp_scale"] = self.scaler.get_scale()
        return record, outputs

    # ------------------------------------------------------------------ records
    def _print(self, line: str) -> None:
        if self.dist.is_main:
            from tqdm.auto import tqdm

            tqdm.write(line, file=sys.stdout)

    def _log_summary(self, means: dict[str, float], rate: float) -> None:
        """One summary line and the TensorBoard scalars: means over the steps since the last line."""
        cfg = self.config
        parts = [f"step {self.step}/{cfg.steps}"]
        for phase in ("g", "d"):
            if f"{phase}_loss" in means:
                terms = " ".join(f"{k[2:]} {v:.4g}" for k, v in means.items() if k.startswith(f"{phase}/"))
                parts.append(f"{phase} {means[f'{phase}_loss']:.4g}" + (f" ({terms})" if terms else ""))
        eta = datetime.timedelta(seconds=int((cfg.steps - self.step) / max(rate, 1e-9)))
        parts.append(f"{rate:.2f} it/s, eta {eta}")
        self._print(" | ".join(parts))
        if self._tb is not None:
            self._tb.scalars({("loss/" + k if k in ("g_loss", "d_loss") else k): v for k, v in means.items()},
                             self.step)
            self._tb.scalars({"perf/steps_per_sec": rate}, self.step)
            self._tb.flush()

    def _log_images(self, batch: Any, outputs: dict[str, Any]) -> None:
        with self.raw_networks(), torch.no_grad():
            visuals = self.pipeline.visuals(batch, outputs)
        grid = image_grid(visuals, self.config.num_visuals)
        save_png(grid, self.output_dir / "images" / f"step_{self.step:08d}.png")
        if self._tb is not None:
            self._tb.image("visuals/" + "|".join(visuals), grid, self.step)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Write a checkpoint of the current state (collective: call on every rank)."""
        info, cfg = self.dist, self.config
        rngs = all_gather_objects(info, capture_rng(self.device))
        path = None
        if info.is_main:
            weights: dict[str, Tensor] = {}
            for name, net in self.networks.items():
                weights.update(_cpu_state(net, f"model.{name}"))
            if self.ema is not None:
                weights.update(_cpu_state(self.ema.module, "ema.generator"))
            pipe = {"name": cfg.pipeline.name, "config": self.pipeline.config_dict()}
            weights_meta = {"format": CHECKPOINT_FORMAT, "step": str(self.step),
                            "pipeline": json.dumps(pipe), "imports": json.dumps(cfg.imports),
                            "networks": json.dumps(list(self.networks)),
                            "ema": json.dumps(self.ema is not None)}
            tensors: dict[str, Tensor] = {}
            state = {
                "step": self.step, "epoch": self.epoch, "epoch_index": self.epoch_index,
                "world_size": info.world_size, "batch_size": cfg.batch_size,
                "optimizers": {n: pack(o.state_dict(), tensors, f"optim.{n}")
                               for n, o in self.optimizers.items()},
                "scaler": pack(self.scaler.state_dict(), tensors, "scaler"),
                "rng": [pack(r, tensors, f"rng.{i}") for i, r in enumerate(rngs)],
            }
            record = {"epoch": self.epoch, "epoch_index": self.epoch_index, "world_size": info.world_size,
                      "pipeline": pipe, "imports": cfg.imports, "train_config": cfg.to_dict(),
                      "ema": self.ema is not None,
                      "created": datetime.datetime.now().isoformat(timespec="seconds"),
                      "torch_version": torch.__version__}
            ck = write_checkpoint(self.checkpoint_dir, self.step, weights, weights_meta, tensors, state,
                                  record)
            prune_checkpoints(self.checkpoint_dir, cfg.keep_last)
            path = ck.weights
        barrier(info)  # no rank runs ahead (or exits) before the checkpoint is complete
        self.last_checkpoint = path if info.is_main else None

    def _load_state(self, ck: CheckpointInfo) -> None:
        from safetensors import safe_open

        info, cfg = self.dist, self.config
        saved_pipe = ck.record.get("pipeline", {})
        current = {"name": cfg.pipeline.name, "config": self.pipeline.config_dict()}
        if saved_pipe != current:
            warnings.warn(f"resuming {ck.weights.name}: its pipeline {saved_pipe} differs from the "
                          f"configured {current}", stacklevel=4)
        weights, _ = read_weights(ck.weights, self.device)
        model = split_prefix(weights, "model")
        for name, net in self.networks.items():
            if name not in model:
                raise CheckpointError(f"{ck.weights} has no weights for network {name!r}; it holds "
                                      f"{sorted(model)}")
            load_network_state(net, model[name], f"network {name!r}")
        if self.ema is not None:
            ema_state = split_prefix(weights, "ema").get("generator")
            if ema_state is None:
                warnings.warn(f"{ck.weights.name} has no EMA weights: the EMA restarts from the generator",
                              stacklevel=4)
                self.ema.module.load_state_dict(self.networks["generator"].state_dict())
            else:
                load_network_state(self.ema.module, ema_state, "the EMA generator")

        with safe_open(str(ck.state), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            state = unpack(json.loads(f.metadata()["state"]), tensors)
        for name, opt in self.optimizers.items():
            if name not in state["optimizers"]:
                raise CheckpointError(f"{ck.state} has no optimiser state for network {name!r}")
            try:
                opt.load_state_dict(state["optimizers"][name])
            except (ValueError, KeyError) as exc:
                raise CheckpointError(f"optimiser state of {name!r} in {ck.state} does not match: "
                                      f"{exc}") from exc
        if self.scaler.is_enabled() and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.epoch_index = int(state["epoch_index"])
        saved_world = int(state["world_size"])
        if saved_world == info.world_size:
            restore_rng(state["rng"][info.rank], self.device)
        else:
            warnings.warn(f"resuming a {saved_world}-process run with {info.world_size} process(es): RNG "
                          f"streams are reseeded and the data position is approximate, so the run will not "
                          f"repeat exactly",
                          stacklevel=4)
            self.epoch_index = self.epoch_index * saved_world // info.world_size
            seed_everything(cfg.seed + 1 + info.rank + 7919 * self.step)
        self.last_checkpoint = ck.weights if info.is_main else None
        self._print(f"resumed from {ck.weights} (step {self.step}, epoch {self.epoch})")
