"""`python -m mibench ...` is the `mibench` command."""

from mibench.cli import main

raise SystemExit(main())
