"""The load-test tools live in loadtest/ at the repository root, which is not on the tests'
import path (pyproject's pythonpath is tests/): put the root there for these tests."""

from __future__ import annotations

import sys

from support.processes import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
