"""A ``DistributedSampler`` that can start mid-epoch, for exact resume.

The order of an epoch depends only on ``(seed, epoch)`` (torch's ``DistributedSampler``: one
permutation of the dataset, padded to a multiple of the world size and dealt out round-robin), so a
resumed run that sets the same epoch and skips the samples it already consumed sees exactly the
batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ResumableDistributedSampler"]


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled, padded) whose next epoch can begin at a given position.

    Args:
        dataset: map-style dataset.
        num_replicas: world size (1 single-process: no process group is needed).
        rank: this process's rank.
        seed: shuffling seed, the same on every rank.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=False)
        self.start_index = 0

    def set_position(self, epoch: int, start_index: int) -> None:
        """The next ``__iter__`` yields epoch ``epoch`` of this rank's indices from ``start_index`` on
        (a count of this rank's samples already consumed in that epoch)."""
        if not 0 <= start_index <= self.num_samples:
            raise ValueError(f"start_index must be in [0, {self.num_samples}]; got {start_index}")
        self.set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self.start_index:]
        self.start_index = 0  # only the first pass after set_position starts mid-epoch
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.start_index
