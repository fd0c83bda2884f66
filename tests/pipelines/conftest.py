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
def narrow_model():
    from morphface import load_default_model

    return load_default_model("narrow")


@pytest.fixture(scope="session")
def batch(narrow_model):
    from .helpers import make_batch

    return make_batch(narrow_model, B=2, seed=0, uv=True)
