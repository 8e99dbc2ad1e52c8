"""Checkpointing: the one checkpoint manager (``manager``) and the run directory's atomic files
and lock (``run_directory``)."""
