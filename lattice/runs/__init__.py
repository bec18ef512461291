"""Run lifecycles (layer 5): the run directory shared by ``lattice run`` and ``lattice train``
(ownership, refusal or ``--force``, resume, checkpoints, log), the sampling job, the training
job and multi-process runs."""
