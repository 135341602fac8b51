"""What the test tiers share: paths, tiny model configs, the package's methods, CLI run
configs, multi-process launching, and the scripts the distributed and SLURM tests start.

``tests/`` is on ``sys.path`` (``tests/conftest.py``), and on the ``PYTHONPATH`` of every
process a test starts, so ``helpers.<module>`` imports everywhere, by ``class_path`` too.
"""
