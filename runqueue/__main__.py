"""`python -m runqueue` is `runqueue`."""

import sys

from runqueue.cli import main

sys.exit(main())
