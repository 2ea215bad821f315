"""The one experiment engine every workload uses.

A workload writes a :class:`~cudalab.train.loop.Task` (data, model, loss, evaluation) and a config
dataclass with a ``train`` section (:class:`~cudalab.train.config.TrainConfig`);
:func:`~cudalab.train.loop.fit` does the rest: device and precision, DDP under torchrun, the loop,
evaluation and early stopping, metrics and TensorBoard, crash-safe checkpoints and resume, and the
run directory with its manifest.

Nothing is imported here: ``cudalab runs`` and the CLI's start-up must not pay for torch.
"""
