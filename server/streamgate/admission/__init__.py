"""May a request run now: quotas per tenant and key, and the gateway-wide admission queue."""

from streamgate.admission.buckets import TokenBucket
from streamgate.admission.queue import AdmissionQueue, QueueFull, QueueTimeout, Slot
from streamgate.admission.quotas import (
    Quota,
    QuotaExceeded,
    QuotaKind,
    QuotaLimits,
    QuotaRemaining,
    Reservation,
    reserve,
)

__all__ = [
    "AdmissionQueue",
    "QueueFull",
    "QueueTimeout",
    "Quota",
    "QuotaExceeded",
    "QuotaKind",
    "QuotaLimits",
    "QuotaRemaining",
    "Reservation",
    "Slot",
    "TokenBucket",
    "reserve",
]
