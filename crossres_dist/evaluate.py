"""Entry point kept where users call it: ``python -m crossres_dist.evaluate`` runs
``crossres_dist.eval.command``."""

import sys

from crossres_dist.eval.command import main

if __name__ == "__main__":
    sys.exit(main())
