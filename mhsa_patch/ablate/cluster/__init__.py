"""``ablate --ray`` on a cluster whose nodes share nothing but the network, and may be lost.

One job per file, each called by :mod:`mhsa_patch.ablate.ray_backend` (the backend: connect, submit, wait) and
tested on its own:

- ``resources``: what one run's task asks Ray for (its GPU, its dataloader workers' CPUs), whatever the driver has;
- ``fingerprint``: what a worker node must match before it trains (ultralytics, the patch, torch, the dataset);
- ``snapshot``: a run's committed epoch as an archive, and the archive put into a run folder atomically;
- ``store``: where snapshots live between tasks (the driver's experiment folder, or ``--storage``), and the
  channel that brings each task's progress to the driver;
- ``task``: the body of one run's Ray task (check, fetch, train, ship every epoch, send the logs back);
- ``latency``: every variant timed in one task on a worker of the runs' device type.

Ray is imported only inside functions that need it: the rest runs (and is tested) without it.
"""
