import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny convs on a shared 2-core CPU: one thread avoids OpenMP contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_clips():
    """``make(identities, frames, size=64)``: one synthetic clip (:func:`morphface.data.synth.synthesize_clip`, no
    audio) of each of identities ``0 .. identities - 1``."""
    from morphface.data.synth import SynthConfig, sample_identity, synthesize_clip
    from morphface.morphable import load_default_model

    full, narrow = load_default_model("full"), load_default_model("narrow")

    def make(identities: int, frames: int, size: int = 64):
        cfg = SynthConfig(identities=identities, clips_per_identity=1, frames=frames, size=size, texture_size=64,
                          supersample=1, audio=False)
        return [synthesize_clip(full, narrow, sample_identity(full, i, cfg), i, 0, cfg) for i in range(identities)]

    return make
