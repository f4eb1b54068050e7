"""``python -m mbrec ...`` = the ``mbrec`` command (for machines where the package is not installed)."""

from mbrec.cli import main

raise SystemExit(main())
