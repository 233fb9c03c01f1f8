"""`python -m manager` is `lfads-manager`."""

import sys

from manager.cli import main

sys.exit(main())
