"""The compiled kernel library: `int4_matmul.cpp`, built once per source version and machine.

Built on first use (the first Int4Linear of a model that asks for it) rather than at install
time: the engine is installed by pip from a source tree, and a build then would tie the package
to the compiler and CPU of the installing machine. `torch.utils.cpp_extension.load` compiles
with the system C++ compiler and ninja into torch's extension cache (`TORCH_EXTENSIONS_DIR`,
default ~/.cache/torch_extensions: outside the checkout), keyed by a hash of the sources, so
later processes only load the shared library; concurrent first builds wait on torch's lock.
A cold build takes 25-30 s on 2 cores. The CPU's vector units are checked at run time
by the library itself (AVX2 + FMA + F16C, else a scalar loop).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LIBRARY = "streamgate_kernels"
SOURCES = (Path(__file__).with_name("int4_matmul.cpp"),)


@functools.cache
def load_kernels() -> bool:
    """Whether the native library is loaded (`torch.ops.streamgate_kernels`): built if needed.

    False, with one warning, when it cannot be built (no compiler or ninja, headers missing):
    callers then use their pure-torch path.
    """
    from torch.utils import cpp_extension  # imports setuptools: only when a kernel is wanted

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
