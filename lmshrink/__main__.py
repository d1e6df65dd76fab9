"""``python -m lmshrink``: the ``lmshrink`` command (see :mod:`lmshrink.command`)."""

from lmshrink.command import main

raise SystemExit(main())
