"""`python -m collector` entry point."""

from collector.cli import main

raise SystemExit(main())
