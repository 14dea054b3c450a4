"""`python -m streamgate_client`: the same as the `streamgate-client` console script."""

import sys

from streamgate_client.cli import main

sys.exit(main())
