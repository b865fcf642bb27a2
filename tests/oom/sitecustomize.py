"""Test only: one CUDA out-of-memory error in the first epoch of every training in a process, from inside the model.

Put on ``PYTHONPATH`` with ``MHSA_TEST_OOM=1`` by ``tests/test_ablate.py``: every Python process then imports this,
and in one that trains, ultralytics' trainer meets ``torch.cuda.OutOfMemoryError`` in the first forward pass of its
first epoch, as it would on a GPU too small for the batch. Its own recovery path runs from there (8.4 halves the
batch and restarts the epoch); nothing of the tool or of ultralytics is replaced. The error comes from a forward
pre-hook on the trainer's model, installed by a callback added to ultralytics' default callbacks once its module is
imported (this file runs before ultralytics is imported, so it waits for it with an import hook).
"""

import os
import sys

if os.environ.get("MHSA_TEST_OOM") == "1":
    import importlib.abc
    import importlib.util

    _armed = []

    def _arm(trainer):
        if _armed or trainer.epoch != trainer.start_epoch:
            return
        import torch

        def hook(module, args):
            handle.remove()
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by the test)")

        handle = trainer.model.register_forward_pre_hook(hook)
        _armed.append(handle)

    class _WhenCallbacksLoad(importlib.abc.MetaPathFinder):
        name = "ultralytics.utils.callbacks.base"

        def find_spec(self, fullname, path=None, target=None):
            if fullname != self.name:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(fullname)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                module.default_callbacks["on_train_batch_start"].append(_arm)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _WhenCallbacksLoad())
