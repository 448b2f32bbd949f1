"""``python -m shardstream ...``: the same as the ``shardstream`` command."""

import sys

from .cli import main

sys.exit(main())
