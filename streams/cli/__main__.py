"""``python -m streams.cli``: the same as the ``streamwarden`` command."""

import sys

from streams.cli import main

sys.exit(main())
