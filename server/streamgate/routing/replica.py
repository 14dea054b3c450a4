"""One backend replica as routing sees it: the adapter plus what is known about its state."""

from __future__ import annotations

from dataclasses import dataclass

from streamgate.backends import BackendInfo, TGIBackend

__all__ = ["Replica"]


@dataclass(eq=False)
class Replica:
    """A backend and its live state (updated by the health monitor and the pipeline).

    Identity semantics (`eq=False`): two replicas are the same only if they are one object.
    """

    name: str
    backend: TGIBackend
    model_label: str | None = None
    """The model id configured for clients; None: the backend's /info model_id."""
    info: BackendInfo | None = None
    """The last /info answer (None until the backend answered once)."""
    healthy: bool = False
    in_flight: int = 0
    """Requests of this gateway streaming from it now."""
    supports_tokenize: bool | None = None
    """Whether POST /tokenize exists (None: not probed yet)."""

    @property
    def model_id(self) -> str:
        """The model id clients see (configured label, else /info's, else the backend name)."""
        if self.model_label:
            return self.model_label
        return self.info.model_id if self.info is not None else self.name
