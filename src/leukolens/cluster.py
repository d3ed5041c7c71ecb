"""A sample's fields analysed on a Dask cluster: ``leukolens analyze --workers N`` starts a local cluster of N worker
processes, one thread each; ``--scheduler tcp://host:8786`` uses one already running (docs/scaling.md).

    >>> with open_cluster(workers=2) as cluster:
    ...     summary = analyze(["smear/"], out="out/smear", cluster=cluster)

Who does what:

- The client (the process that called :func:`~leukolens.analyze.analyze`) finds the images, estimates the sample's
  scale once from its first fields, adapts the cell model when asked, reads back the fields a resumed run keeps,
  and writes the summary and the report, exactly as without a cluster.
- A task is a few fields (:data:`FIELDS_PER_TASK`): :func:`~leukolens.analyze.analyse_fields`, the function a run
  without a cluster calls too, on a worker, which writes the fields' files itself (each atomically) and returns
  their documents.
- Each worker process loads the models once (:func:`worker_models`, a cache keyed by the
  :class:`~leukolens.analyze.ModelSpec`), each network on one thread: two one-thread workers keep two cores busy
  with no thread contending with another.

A worker that dies has its tasks run again on another (the scheduler does that; a task is idempotent: it writes the
same files again), and a task that raises is tried :data:`RETRIES` more times; a task that still fails has its
fields reported as skipped, with the reason, and the rest of the sample stands.

Dask is an optional dependency (``pip install 'leukolens[distributed]'``), imported here only, only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from leukolens.analyze import FieldJob, FieldModels, FieldResult, FieldSettings, ModelSpec, analyse_fields
from leukolens.errors import LeukolensError

FIELDS_PER_TASK = 1
"""Fields per task. One: small tasks share the work out evenly to the end of a sample, and the networks gain little
from batching whole fields on one thread (``make bench BENCH=scaling`` compares four a task)."""
RETRIES = 2
"""Further tries of a task that raised (a worker that dies is Dask's own business: its tasks move elsewhere)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to reach a scheduler before giving up with a message."""
WORKERS_TIMEOUT = 30.0
"""Seconds a reachable scheduler has to show one worker before giving up with a message (its tasks would otherwise
wait for a worker forever)."""

_models: dict[tuple, FieldModels] = {}
_models_lock = threading.Lock()


# ------------------------------------------------------------------------------------------------------ on a worker
def worker_models(spec: ModelSpec, adaptation: str | None = None, adapted_weights: dict | None = None) -> FieldModels:
    """The models of ``spec`` in this worker process, loaded at its first task and kept for the next ones (the
    latest set only: a worker holds one sample's models). ``adaptation`` names a sample's adapted cell network,
    ``adapted_weights``."""
    key = (spec, adaptation)
    with _models_lock:
        if key not in _models:
            _models.clear()
            if spec.threads:
                import torch

                torch.set_num_threads(spec.threads)
            _models[key] = FieldModels.load(spec, adapted_weights=adapted_weights)
        return _models[key]


def analyse_task(spec: ModelSpec, settings: FieldSettings, jobs: Sequence[FieldJob], adaptation: str | None = None,
                 adapted_weights: dict | None = None) -> list[FieldResult]:
    """One task: a few fields analysed and written on a worker."""
    return analyse_fields(worker_models(spec, adaptation, adapted_weights), jobs, settings)


# ------------------------------------------------------------------------------------------------------ the client
class FieldCluster:
    """A connection to a Dask cluster that analyses fields (made by :func:`open_cluster`)."""

    def __init__(self, client, *, local: bool, fields_per_task: int = FIELDS_PER_TASK):
        self.client = client
        self.local = local
        self.fields_per_task = fields_per_task

    def paths_for_workers(self, paths: Sequence[Path]) -> list[Path]:
        """``paths`` as the workers must see them: as given on a local cluster (same machine, same working
        folder), absolute on another (the files must be on a file system the workers share, at the same path)."""
        return list(paths) if self.local else [Path(p).absolute() for p in paths]

    def analyse(
        self,
        spec: ModelSpec,
        jobs: Sequence[FieldJob],
        settings: FieldSettings,
        *,
        adapted_weights: dict | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[FieldResult]:
        """Analyse ``jobs`` on the cluster's workers; returns their results as tasks finish (any order).

        Args:
            spec: the models each worker loads (once).
            jobs: the fields.
            settings: how the sample's fields are analysed (its scale already estimated).
            adapted_weights: the sample's adapted cell network, sent once to every worker.
            progress: called with (fields done, fields to do) as tasks finish.
        """
        from distributed import as_completed

        adaptation = weights = None
        if adapted_weights is not None:
            adaptation = uuid.uuid4().hex
            weights = self.client.scatter(adapted_weights, broadcast=True, hash=False)
        size = self.fields_per_task
        chunks = [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
        futures = {
            self.client.submit(analyse_task, spec, settings, chunk, adaptation, weights, retries=RETRIES, pure=False):
            chunk for chunk in chunks
        }
        results: list[FieldResult] = []
        done = 0
        for future in as_completed(futures, loop=self.client.loop):
            chunk = futures[future]
            try:
                results += future.result()
            except Exception as error:  # failed on every try (or killed its workers): these fields are skipped
                reason = str(error) if isinstance(error, LeukolensError) else f"{type(error).__name__}: {error}"
                results += [FieldResult(job.path, job.stem, reason=f"{job.path}: not analysed: {reason}")
                            for job in chunk]
            future.release()
            done += len(chunk)
            if progress:
                progress(done, len(jobs))
        return results


@contextlib.contextmanager
def open_cluster(
    *, workers: int | None = None, scheduler: str | None = None, fields_per_task: int = FIELDS_PER_TASK,
    log: Callable[[str], None] = print,
) -> Iterator[FieldCluster]:
    """A local cluster of ``workers`` processes (one thread each), or the cluster whose scheduler is at
    ``scheduler``, analysing ``fields_per_task`` fields a task; closed (the local one stopped) on leaving.

    Raises:
        LeukolensError: both or neither given, fewer than one worker, Dask not installed, the scheduler not
            reachable within :data:`CONNECT_TIMEOUT` seconds, or without a worker for :data:`WORKERS_TIMEOUT`.
    """
    if (workers is None) == (scheduler is None):
        raise LeukolensError("give either --workers N (a local Dask cluster) or --scheduler ADDRESS (a running one)")
    if workers is not None and workers < 1:
        raise LeukolensError(f"--workers must be at least 1, got {workers}")
    try:
        import distributed
    except ImportError:
        raise LeukolensError(
            "--workers and --scheduler need Dask distributed: pip install 'leukolens[distributed]'"
        ) from None
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            cause = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise LeukolensError(
                f"cannot reach the Dask scheduler at {scheduler} ({cause}); is it running? "
                "(start one with `dask scheduler` and `dask worker`, or use --workers N for a local cluster)"
            ) from None
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except (OSError, TimeoutError):
            client.close()
            raise LeukolensError(
                f"the Dask scheduler at {scheduler} has no workers (none joined within {WORKERS_TIMEOUT:g} s): "
                f"start some with `dask worker {scheduler}`, or use --workers N for a local cluster"
            ) from None
        try:
            log(f"leukolens: analysing on the Dask cluster at {scheduler} ({len(client.nthreads())} workers)")
            yield FieldCluster(client, local=False, fields_per_task=fields_per_task)
        finally:
            client.close()
        return
    local = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None, silence_logs=logging.ERROR)
    try:
        client = distributed.Client(local, set_as_default=False)
        try:
            yield FieldCluster(client, local=True, fields_per_task=fields_per_task)
        finally:
            client.close()
    finally:
        local.close()
