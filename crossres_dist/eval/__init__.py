"""Evaluation: one package, one module per concern (in the manner of dinov2's ``eval/``).

- ``features``: distributed feature extraction, its resumable cache, and the gather that
  validation shares;
- ``metrics``: verification (ROC, TAR at FAR), closed-set CMC, open-set TPIR at FPIR;
- ``templates``: IJB-style template features (media mean, sum, L2 norm);
- ``align``: five-landmark similarity alignment;
- ``protocols``: one module per benchmark, with a common interface (``Protocol``);
- ``report``: JSON, markdown and plots.

``python -m crossres_dist.evaluate`` is the command line.
"""
