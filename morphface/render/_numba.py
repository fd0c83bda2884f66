"""numba set-up shared by the CPU kernels; import it before ``numba`` compiles anything here.

numba's default threading layer on Linux is GNU OpenMP, which is not fork-safe: once a process has
run a parallel kernel, every child it forks (``DataLoader`` workers with the default ``fork``
start method) is killed at its first parallel kernel ("fork() called from a process already using
GNU OpenMP"). Rendering inside data-loading workers is this library's normal use, so the
``"forksafe"`` layer is selected (TBB when installed, else numba's own workqueue pool), unless the
user chose a layer with ``NUMBA_THREADING_LAYER``. It only takes effect if no parallel kernel has
run yet in the process.
"""

from __future__ import annotations

import os

import numba

if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "forksafe"
