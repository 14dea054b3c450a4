"""A pool: replicas serving the same model, and the picker that chooses among them."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from streamgate.routing.pickers import Picker, PickRequest, PrefixAffinity
from streamgate.routing.prefix import block_hashes
from streamgate.routing.replica import Replica

__all__ = ["Pool"]


@dataclass(eq=False)
class Pool:
    """See the module doc. `block_bytes`/`max_blocks`: how prompts are hashed for the picker."""

    name: str
    replicas: tuple[Replica, ...]
    picker: Picker
    block_bytes: int = 128
    max_blocks: int = 256

    @property
    def healthy(self) -> bool:
        """At least one replica is healthy."""
        return any(r.healthy for r in self.replicas)

    def request(self, prompt: str, salt: str) -> PickRequest:
        """What the picker needs of a prompt (its prefix hashes only if the picker uses them).

        `salt`: the model and the tenant's cache namespace; tenants never share prefix entries.
        """
        if not isinstance(self.picker, PrefixAffinity):
            return PickRequest()
        return PickRequest(block_hashes(prompt, salt, self.block_bytes, self.max_blocks))

    def pick(self, request: PickRequest, exclude: Collection[Replica] = ()) -> Replica | None:
        """The replica for the next attempt (None: no healthy one left)."""
        candidates = [r for r in self.replicas if r.routable() and r not in exclude]
        if not candidates:
            return None
        chosen = self.picker.pick(candidates, request)
        chosen.circuit.on_send()
        return chosen

    def model_identity(self) -> str:
        """The model its replicas serve: ids and revisions from /info (sorted, deduplicated),
        so that a new model revision never answers from an older one's cache entries."""
        ids = {
            f"{r.info.model_id}@{r.info.model_sha or ''}" if r.info is not None else r.model_id
            for r in self.replicas
        }
        return ",".join(sorted(ids))

    def forget(self, replica: Replica) -> None:
        """Drop what the picker knows of `replica`'s cache (it restarted)."""
        if isinstance(self.picker, PrefixAffinity):
            self.picker.index.forget(replica.name)

    def has_alternative(self, exclude: Iterable[Replica]) -> bool:
        """Another routable replica than those in `exclude` is there to try."""
        excluded = frozenset(exclude)
        return any(r.routable() and r not in excluded for r in self.replicas)
