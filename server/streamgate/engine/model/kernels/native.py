"""The compiled kernel library: the `.cpp` files here, built once per source version and machine.

Built on first use (the first native operation a model runs; `make run` and `make test` ask
once at set-up, so that no engine start waits for it), not by pip: a wheel built then would tie
the package to the compiler and CPU of the building machine. `torch.utils.cpp_extension.load`
compiles with the system C++ compiler and ninja into torch's extension cache
(`TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions: outside the checkout), keyed by a
hash of the sources (ninja follows the headers), so later processes only load the shared
library; concurrent first builds wait on torch's lock. A cold build takes 25-30 s on 2 cores.
The CPU's vector units are checked at run time by the library itself (AVX2 + FMA + F16C, else
scalar loops).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sysconfig
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LIBRARY = "streamgate_kernels"
# Every C++ file of this folder: one library, `TORCH_LIBRARY` in int4_matmul.cpp and a
# `TORCH_LIBRARY_FRAGMENT` in each other file.
SOURCES = tuple(sorted(Path(__file__).parent.glob("*.cpp")))


@functools.cache
def load_kernels() -> bool:
    """Whether the native library is loaded (`torch.ops.streamgate_kernels`): built if needed.

    False, with one warning, when it cannot be built (no compiler or ninja, headers missing):
    callers then use their pure-torch path.
    """
    from torch.utils import cpp_extension  # imports setuptools: only when a kernel is wanted

    # torch runs `ninja` from PATH; the `ninja` wheel (a dependency) puts it in this
    # environment's scripts folder, which is not on PATH when the environment is not activated.
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja") is None and shutil.which("ninja", path=scripts) is not None:
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])
    try:
        cpp_extension.load(
            name=LIBRARY,
            sources=[str(s) for s in SOURCES],
            extra_cflags=["-O3", "-fopenmp"],  # at::parallel_for is OpenMP in torch's builds
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
        )
    except (OSError, RuntimeError, ImportError) as err:
        log.warning("native kernels unavailable, using the pure-torch paths: %s", err)
        return False
    return True


def has_avx2() -> bool:
    """Whether the loaded library runs its AVX2 loops on this CPU (False when not loaded)."""
    return load_kernels() and bool(torch.ops.streamgate_kernels.has_avx2())
