"""Tools of the repository, not of the installed library: the demo, sweeps of job arrays and
the published results (``make readme``, ``make stale``)."""
