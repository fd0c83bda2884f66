from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # These tiny convs are slower with several threads, and on a shared CPU busy-waiting OpenMP threads
    # make them 10x slower still: train tests run single-threaded (their subprocesses too, see helpers).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_yaml(tmp_path):
    import yaml

    def write(cfg: dict, name="cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write
