"""`python -m fsm.cli`: the same as the `mosaico-fsm` command."""

from fsm.cli import main

raise SystemExit(main())
