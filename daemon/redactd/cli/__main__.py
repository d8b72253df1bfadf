"""``python -m redactd.cli``: the ``redactd`` command."""

import sys

from redactd.cli.main import main

sys.exit(main())
