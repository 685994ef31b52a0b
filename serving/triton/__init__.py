"""Triton Inference Server backend: model repository, server launcher, gRPC runner, live updates.

* :mod:`.config`: one description of a served detector -> ``config.pbtxt`` (gpu/portable);
* :mod:`.repository`: write registered versions into a model repository;
* :mod:`.server`: start the ``tritonserver`` of the ``nvidia-pytriton`` wheel on 127.0.0.1;
* :mod:`.runner`: ``TritonRunner`` / ``AsyncTritonRunner`` (``NetworkRunner`` over gRPC);
* :mod:`.backend`: ``make_runner_factory(settings)`` for ``inference_backend="triton"``;
* :mod:`.cli`: ``oncotriage deploy triton``.

Nothing here imports torch or MONAI; ``tritonclient`` is imported where it is used.
"""
