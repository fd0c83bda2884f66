import os
from pathlib import Path

# Numba compiles the CPU rasteriser once; a persistent cache makes later test runs fast.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
TESTDATA = SHARED / "testdata"


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="torch device of the device-generic tests (those taking the `device` fixture, marked "
                          "device_generic): cpu (default), cuda, cuda:1, ... Select them with -m device_generic.")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The torch device named by ``--device`` (default ``cpu``); skips when CUDA is asked for but absent."""
    name = request.config.getoption("--device")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"--device {name}: torch sees no CUDA GPU")
    return dev


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def default_model():
    from morphface import load_default_model

    return load_default_model()


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


def pytest_configure(config):
    name = config.getoption("--device")
    try:
        torch.device(name)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--device {name!r} is not a torch device: {exc}") from exc


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marks below must count
def pytest_collection_modifyitems(config, items):
    # Tests that take the `device` fixture run on whatever --device names: mark them so that a GPU run
    # can select them (`pytest -m "cuda or device_generic" --device cuda`, as bench/gpu_check.py does).
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device_generic)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none available)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
