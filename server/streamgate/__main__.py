"""`python -m streamgate`: the same as the `streamgate` console script."""

import sys

from streamgate.cli import main

sys.exit(main())
