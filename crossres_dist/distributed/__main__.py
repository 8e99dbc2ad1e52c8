"""``python -m crossres_dist.distributed route HOST``: the launchers' question (see bootstrap.main)."""

import sys

from crossres_dist.distributed.bootstrap import main

sys.exit(main())
