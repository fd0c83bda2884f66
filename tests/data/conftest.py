"""Shared tiny synthetic caches for the morphface.data tests (64x64 frames, a few frames per clip)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from morphface.data.synth import SynthConfig, synthesize_dataset

TINY = dict(identities=2, clips_per_identity=2, frames=8, size=64, texture_size=64, seed=3)


@pytest.fixture(scope="session")
def tiny_config() -> SynthConfig:
    return SynthConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_config):
    """A cache of 2 identities x 2 clips x 8 frames of 64x64 synthetic frames (with audio)."""
    root = tmp_path_factory.mktemp("synth_cache")
    synthesize_dataset(root, tiny_config, progress=False)
    return root


@pytest.fixture(scope="session")
def synth128(tmp_path_factory, tiny_config):
    """One identity x 2 clips x 6 frames at 128x128, without audio: faces a detector finds."""
    root = tmp_path_factory.mktemp("synth128")
    cfg = replace(tiny_config, identities=1, clips_per_identity=2, frames=6, size=128, audio=False, supersample=1)
    synthesize_dataset(root, cfg, progress=False)
    return root


@pytest.fixture(scope="session")
def models():
    from morphface import load_default_model

    return load_default_model("full"), load_default_model("narrow")
