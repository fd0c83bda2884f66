"""Real evaluation clips: crops of the shared talking-head video, fitted, in memory or as a clip cache."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from morphface.metrics import EvalClip


def real_clips(testdata: Path, size: int, starts=(0, 40), length: int = 3) -> list[EvalClip]:
    """Two clips of ``length`` frames of the shared video, cropped to ``size`` and fitted (one box and one
    identity per clip). They show the same man; they are labelled as two identities for pairing tests."""
    from morphface import load_default_model
    from morphface.fitting import (
        CropTransform,
        crop_box_from_landmarks,
        fit_video,
        make_detector,
        smooth_crop_track,
    )
    from morphface.fitting.video import detect_video_landmarks
    from morphface.io import read_video

    video = read_video(testdata / "liveportrait_d20_talking.mp4", max_frames=max(starts) + length)
    model = load_default_model("narrow")
    detector = make_detector("auto")
    clips = []
    for n, s in enumerate(starts):
        frames = video.frames[s:s + length]
        lms, found, _ = detect_video_landmarks(frames, detector, progress=False)
        assert bool(found.all())
        crop = CropTransform.from_box(smooth_crop_track(crop_box_from_landmarks(lms)), size)
        fit = fit_video(model, None, landmarks=crop.apply(lms), image_size=(size, size), progress=False)
        clips.append(EvalClip(name=f"id{n}/v/c", identity=f"id{n}", frames=crop.crop(frames).clamp(0, 1),
                              fit=fit, fps=video.fps))
    return clips


def write_cache(root: Path, clips: list[EvalClip], audio_dim: tuple[int, int] = (4, 27)) -> Path:
    """The clips as a clip cache in the data contract's format (written directly, not through morphface.data);
    the first clip gets random audio features."""
    from morphface.io import write_video

    for i, clip in enumerate(clips):
        folder = root / clip.name
        folder.mkdir(parents=True)
        write_video(folder / "frames.mp4", clip.frames, clip.fps, crf=10)
        clip.fit.save(folder / "params.safetensors")
        has_audio = i == 0
        if has_audio:
            from safetensors.torch import save_file

            feats = torch.randn(clip.frames.shape[0], *audio_dim, generator=torch.Generator().manual_seed(i))
            save_file({"features": feats}, str(folder / "audio.safetensors"))
        meta = {"fps": clip.fps, "num_frames": clip.frames.shape[0], "size": clip.frames.shape[-1],
                "crop_box": [0, 0, 10, 10], "source": "test", "model": "default", "audio": has_audio,
                "version": 1}
        (folder / "meta.json").write_text(json.dumps(meta))
    return root
