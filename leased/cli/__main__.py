"""``python -m leased.cli``: the ``leased`` command without its installed script."""

from leased.cli.entry import main

raise SystemExit(main())
