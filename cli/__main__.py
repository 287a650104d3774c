"""``python -m cli``: the ``freshrec`` command without the console script (tests spawn it so)."""

import sys

from cli.main import main

sys.exit(main())
