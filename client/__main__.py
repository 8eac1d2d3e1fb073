"""``python -m gradserve`` is the ``gradserve`` command."""

import sys

from .cli import main

sys.exit(main())
