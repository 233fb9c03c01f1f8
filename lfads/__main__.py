"""`python -m lfads --kind=...`: the form the manager's scripts use."""

from lfads.cli import main

raise SystemExit(main())
