"""The ``leased`` command line, shaped like ``sanlock``'s.

One module per command, each importing what it needs only when it runs:

* :mod:`leased.cli.entry`: ``main``, the top-level usage and the dispatch;
* :mod:`leased.cli.direct`: ``leased direct``, lease operations with no daemon;
* :mod:`leased.cli.client`: ``leased client``, sanlock's client actions;
* :mod:`leased.cli.daemon`: ``leased daemon``, options and config, then the daemon;
* :mod:`leased.cli.options`: the option tables that build parsers and ``--help``;
* :mod:`leased.cli.specs`: the LOCKSPACE, RESOURCE, area and ``-A`` arguments.

The console script is ``leased = "leased.cli:main"``.
"""

from leased.cli.entry import main

__all__ = ["main"]
