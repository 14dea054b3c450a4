"""Reading a Prometheus text page: the gateway's and the backends' gauges and counters."""

from __future__ import annotations

import urllib.request

__all__ = ["Samples", "scrape"]


class Samples(dict[str, float]):
    """One scrape: `{'name{labels}': value}`, as the page writes them."""

    def value(self, name: str) -> float:
        """The sum of `name` over all its label sets (0 when absent)."""
        return sum(v for key, v in self.items() if key == name or key.startswith(name + "{"))


def scrape(url: str, timeout: float = 10.0) -> Samples:
    """GET a /metrics page."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    samples = Samples()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples
