"""`python -m smmf.cli`: the `smmf` command, for processes started without the console script."""

import sys

from . import main

sys.exit(main())
