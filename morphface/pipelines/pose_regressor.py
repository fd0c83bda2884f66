"""Train the MediaPipe pose regressor (:mod:`morphface.fitting.pose_regressor`) on renders run through MediaPipe.

``python -m morphface.pipelines.pose_regressor --out out/pose_regressor.safetensors``

1. **Render set** (:func:`render_detector_set`): textured synthetic people of the dataset generator
   (:func:`~morphface.data.render_posed_faces`), each at random head rotations (pitch, yaw, roll uniform
   in ``±max_degrees``) and, for half of the renders, a random expression from the generator's speech
   trajectories; **MediaPipe runs on every render**; the points of the detected faces are kept with the
   true rotation. The set is written to ``<out>.renders.pt`` (a plain tensor file, loaded with
   ``weights_only=True``) and reused by later runs with the same settings.
2. **Training**: Adam on the mean squared Frobenius distance of the rotations, with in-plane rotation
   augmentation (rotating the centred points about the viewing axis rotates the head by the same roll),
   and point jitter.
3. **Held-out check**: people never rendered for training (``--val-people``); the mean angular error and
   the per-angle slope/MAE of the regressor, and of the plain dense fit on the same points, are printed
   and written to ``<out>.json``.

People: training identities start at 1000, validation at 900, so none of ``bench/fit_real.py``'s (0-3,
10-11, 100-102) or ``tests/fitting/test_pose_on_renders.py``'s (7) are ever seen.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..camera import euler_to_matrix, matrix_to_euler
from ..fitting.accuracy import angle_slope_mae
from ..fitting.pose_regressor import (
    PoseRegressor,
    PoseRegressorConfig,
    pose_features,
    ray_rotation,
    save_pose_regressor,
)

__all__ = ["RenderSetConfig", "render_detector_set", "train_pose_regressor", "main"]


@dataclass(frozen=True)
class RenderSetConfig:
    """Which renders make a set.

    Attributes:
        first_person, people: identities ``first_person .. first_person + people - 1``.
        poses_per_person: renders per person.
        max_degrees: ``(pitch, yaw, roll)`` half ranges of the uniform pose distribution.
        sizes: image sides, cycled over people.
        expression_fraction: share of renders with a random expression.
        seed: pose and expression stream.
    """

    first_person: int = 1000
    people: int = 200
    poses_per_person: int = 25
    max_degrees: tuple[float, float, float] = (50.0, 80.0, 25.0)
    sizes: tuple[int, ...] = (192, 256)
    expression_fraction: float = 0.5
    seed: int = 0


def render_detector_set(config: RenderSetConfig, detector=None, progress: bool = True) -> dict[str, torch.Tensor]:
    """Render people at random poses, run the detector, keep the detected faces' points.

    Returns:
        ``points (N, 468, 3)`` pixels with relative depth, ``angles (N, 3)`` true radians, ``size (N,)``
        image sides, ``person (N,)`` identities; renders without a detected face are dropped
        (``rendered`` holds the count before).
    """
    from tqdm.auto import tqdm

    from ..data.synth import render_posed_faces
    from ..data.trajectories import expression_trajectory
    from ..fitting import make_detector
    from ..fitting.image import dense_points
    from ..morphable import load_default_model

    full, narrow = load_default_model("full"), load_default_model("narrow")
    det = make_detector("mediapipe") if detector is None else detector
    out: dict[str, list] = {"points": [], "angles": [], "size": [], "person": []}
    rendered = 0
    people = range(config.first_person, config.first_person + config.people)
    for k, person in enumerate(tqdm(people, desc="render + detect", disable=not progress)):
        g = torch.Generator().manual_seed(config.seed * 1_000_003 + person)
        n = config.poses_per_person
        half = torch.tensor(config.max_degrees)
        angles = (torch.rand(n, 3, generator=g) * 2 - 1) * half * (math.pi / 180)
        exp = expression_trajectory(full, n * 8, 25.0, generator=g)[::8]
        keep = torch.rand(n, generator=g) < config.expression_fraction
        exp = exp * keep[:, None]
        size = config.sizes[k % len(config.sizes)]
        images, gt = render_posed_faces(full, narrow, angles, identity=person, size=size, supersample=1,
                                        expressions=exp)
        rendered += n
        for i in range(n):
            faces = det.detect(images[i])
            pts = dense_points(faces[:1], depth=True) if faces else None
            if pts is None or pts.shape[-1] != 3:
                continue
            out["points"].append(pts[0])
            out["angles"].append(gt.angles[i])
            out["size"].append(size)
            out["person"].append(person)
    if not out["points"]:
        raise RuntimeError("the detector found no face on any render")
    return {"points": torch.stack(out["points"]), "angles": torch.stack(out["angles"]),
            "size": torch.tensor(out["size"]), "person": torch.tensor(out["person"]),
            "rendered": torch.tensor(rendered)}


def _apparent_rotation(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """True rotation relative to the ray through the points' centroid, ``(N, 3, 3)``."""
    return _rays(data).transpose(1, 2) @ euler_to_matrix(data["angles"])


def _rays(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(N, 3, 3)`` ray rotations of square renders of several sizes (each its default focal, centred)."""
    from ..fitting.result import default_focal

    size = data["size"].to(data["points"].dtype)
    focal = torch.tensor([default_focal((int(s), int(s))) for s in data["size"].unique().tolist()])
    focal = focal[torch.searchsorted(data["size"].unique(), data["size"])]
    return ray_rotation(data["points"], (1, 1), focal=focal, principal_point=torch.stack([size, size], 1) / 2)


def _roll(features: torch.Tensor, R: torch.Tensor, g: torch.Generator, max_rad: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate the centred points about the viewing axis by a random angle, and the target with them."""
    N = features.shape[0]
    phi = (torch.rand(N, generator=g) * 2 - 1) * max_rad
    c, s = phi.cos(), phi.sin()
    Rz = torch.zeros(N, 3, 3)
    Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
    p = features.reshape(N, -1, 3) @ Rz.transpose(1, 2)
    return p.flatten(1), Rz @ R


def train_pose_regressor(train: dict[str, torch.Tensor], config: PoseRegressorConfig | None = None,
                         steps: int = 4000, batch: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                         roll_degrees: float = 30.0, jitter: float = 0.004, seed: int = 0,
                         progress: bool = True) -> PoseRegressor:
    """Fit a :class:`PoseRegressor` to a render set (module docstring, step 2).

    ``jitter``: Gaussian noise on the normalised points (units of the face's RMS radius).
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    # Adam's moment estimates of this MLP decay into denormal floats, which made CPU steps ~10x slower.
    torch.set_flush_denormal(True)
    g = torch.Generator().manual_seed(seed)
    feats = pose_features(train["points"])
    target = _apparent_rotation(train)
    net = PoseRegressor(config or PoseRegressorConfig(n_points=train["points"].shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    bar = tqdm(range(steps), desc="train pose regressor", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, feats.shape[0], (min(batch, feats.shape[0]),), generator=g)
        x, R = _roll(feats[idx], target[idx], g, math.radians(roll_degrees))
        x = x + jitter * torch.randn(x.shape, generator=g)
        loss = (net(x) - R).pow(2).sum((1, 2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return net.eval()


def evaluate_rotations(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Mean geodesic error (deg) and per-angle slope / MAE (deg) of ``(N, 3)`` radian Euler angles."""
    Rp, Rt = euler_to_matrix(pred), euler_to_matrix(true)
    cos = (((Rp.transpose(1, 2) @ Rt).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    slope, mae = angle_slope_mae(true * (180 / math.pi), pred * (180 / math.pi))
    out = {"geodesic_deg": round(math.degrees(float(cos.acos().mean())), 2)}
    for i, name in enumerate(("pitch", "yaw", "roll")):
        out[f"{name}_slope"] = round(float(slope[i]), 3)
        out[f"{name}_mae"] = round(float(mae[i]), 2)
    return out


def _predict(net: PoseRegressor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        R_app = net(pose_features(data["points"]))
    return matrix_to_euler(_rays(data) @ R_app)


def _dense_fit_angles(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """The plain dense fit's angles on the same points (the reference the regressor must beat)."""
    from ..fitting.dense import fit_dense_landmarks
    from ..morphable import load_default_model

    narrow = load_default_model("narrow")
    out = torch.empty(data["points"].shape[0], 3)
    for s in data["size"].unique().tolist():
        m = data["size"] == s
        out[m] = fit_dense_landmarks(narrow, data["points"][m], (int(s), int(s))).angles
    return out


def _render_set(config: RenderSetConfig, cache: Path, progress: bool) -> dict[str, torch.Tensor]:
    """Load a cached render set made with the same settings, or make and cache it (atomically)."""
    key = json.dumps(config.__dict__, sort_keys=True, default=list)
    if cache.is_file():
        data = torch.load(cache, weights_only=True)
        if data.get("key") == key:
            return data["set"]
    data = render_detector_set(config, progress=progress)
    tmp = cache.with_name(cache.name + ".tmp")
    torch.save({"key": key, "set": data}, tmp)
    tmp.replace(cache)
    return data


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m morphface.pipelines.pose_regressor",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="weights file (.safetensors); <out>.json: the numbers")
    ap.add_argument("--people", type=int, default=200, help="training people (identities from 1000)")
    ap.add_argument("--poses", type=int, default=25, help="renders per person")
    ap.add_argument("--val-people", type=int, default=20, help="held-out people (identities from 900)")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    progress = not args.no_progress
    t0 = time.time()
    train_cfg = RenderSetConfig(first_person=1000, people=args.people, poses_per_person=args.poses, seed=args.seed)
    val_cfg = RenderSetConfig(first_person=900, people=args.val_people, poses_per_person=args.poses,
                              seed=args.seed + 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    train = _render_set(train_cfg, args.out.with_name(args.out.stem + ".train-renders.pt"), progress)
    val = _render_set(val_cfg, args.out.with_name(args.out.stem + ".val-renders.pt"), progress)
    t_render = time.time() - t0
    net = train_pose_regressor(train, PoseRegressorConfig(hidden=args.hidden, dropout=args.dropout),
                               steps=args.steps, lr=args.lr, seed=args.seed, progress=progress)
    report = {
        "train_renders": int(train["rendered"]), "train_detected": int(train["points"].shape[0]),
        "val_renders": int(val["rendered"]), "val_detected": int(val["points"].shape[0]),
        "render_seconds": round(t_render, 1), "total_seconds": round(time.time() - t0, 1),
        "steps": args.steps, "hidden": args.hidden, "dropout": args.dropout, "lr": args.lr, "seed": args.seed,
        "val_regressor": evaluate_rotations(_predict(net, val), val["angles"]),
        "val_dense_fit": evaluate_rotations(_dense_fit_angles(val), val["angles"]),
        "train_regressor": evaluate_rotations(_predict(net, train), train["angles"]),
    }
    save_pose_regressor(net, args.out, metadata=report)
    tmp = args.out.with_name(args.out.stem + ".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(args.out.with_name(args.out.stem + ".json"))
    for k in ("val_dense_fit", "val_regressor", "train_regressor"):
        print(k, report[k])
    return 0


if __name__ == "__main__":
    sys.exit(main())
