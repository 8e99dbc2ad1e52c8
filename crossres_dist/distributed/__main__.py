"""The launchers' two questions:
``python -m crossres_dist.distributed route HOST`` (which of this node's addresses reaches HOST;
network.main) and ``python -m crossres_dist.distributed supervise HOST:PORT -- torchrun ...``
(torchrun with a deadline on its rendezvous store; supervise.py)."""

import os
import sys

if sys.argv[1:2] == ["supervise"]:
    from crossres_dist.distributed.supervise import main

    code = main(sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Without the interpreter's teardown: a probe thread may still sit in torch's store client,
    # whose destruction under it aborts the process ("terminate called ...").
    os._exit(code)
from crossres_dist.distributed.network import main

sys.exit(main())
