"""``morphface reenact CHECKPOINT --source IMG --driving VIDEO -o OUT.mp4``: animate a photo with a video.

The source photo and the driving clip are cropped around their faces and fitted (landmark detector +
3DMM fit), the source is driven by the clip's expression and head pose with the trained HeadGAN,
IFaceUV or X2Face pipeline, and ``OUT.mp4`` shows source | driving | output side by side at the clip's frame
rate, with the driving clip's audio track copied when it has one (and fed to HeadGAN when the pipeline
uses audio).
"""

from __future__ import annotations

import argparse

from ._checkpoint import add_checkpoint_arguments, load_checkpoint_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reenact", help="drive a source photo with a video using a trained HeadGAN/IFaceUV",
                       description="Reenact the face in --source with the expressions and head motion of "
                                   "--driving; writes source | driving | output side by side.")
    add_checkpoint_arguments(p)
    p.add_argument("--source", required=True, help="source image (the identity)")
    p.add_argument("--driving", required=True, help="driving video (expression, pose, audio)")
    p.add_argument("-o", "--output", required=True, help="output .mp4")
    p.add_argument("--relative", action="store_true",
                   help="transfer motion relative to the first driving frame (keeps the source's pose)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N driving frames")
    p.add_argument("--detector", default=None, help="landmark detector backend (default: the pipeline's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    import torch

    from ..errors import MorphfaceError
    from ..io import probe_video, read_image, read_video, write_video

    try:
        pipe = load_checkpoint_pipeline(args)
        if args.detector:
            from ..fitting import make_detector

            pipe.detector = make_detector(args.detector)
        source_image = read_image(args.source)
        video = read_video(args.driving, max_frames=args.max_frames)
        has_audio = probe_video(args.driving).has_audio
        src = pipe.prepare_source(source_image, crop=True)  # 3DMM pipelines also fit the faces
        drv = pipe.prepare_driving(video.frames, crop=True)
        audio = None
        if has_audio and getattr(pipe.config, "use_audio", False):
            from ..audio import video_audio_features

            audio = video_audio_features(args.driving, flatten=True)[: drv.images.shape[0]]
            if audio.shape[0] < drv.images.shape[0]:  # the audio track ends early: pad with its last frame
                pad = audio[-1:].expand(drv.images.shape[0] - audio.shape[0], -1)
                audio = torch.cat([audio, pad])
        out = pipe.reenact(src.images, drv.images, driving_params=drv.fit, source_fit=src.fit, audio=audio,
                           relative=args.relative, crop=False, batch_size=args.batch_size)
        T = out.shape[0]
        side = torch.cat([src.images.cpu()[None].expand(T, -1, -1, -1), drv.images.cpu(), out.cpu()], dim=-1)
        write_video(args.output, side, fps=video.fps, audio_path=args.driving if has_audio else None)
    except (MorphfaceError, ValueError, OSError) as e:
        print(f"morphface reenact: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({T} frames, source | driving | output)")
    return 0
