"""The analysis queue: samples wait in a bounded queue; worker threads analyse them one at a time, field by field.

Each worker loads its models once and then, per sample: marks it ``running``, estimates the sample's scale from
its first pending fields, and for every pending field detects and reads its cells and stores the result with
``complete_field`` (one transaction), so a kill loses no completed field. A sample left ``running`` by a killed
service is queued again at start-up (:meth:`AnalysisQueue.resume`) and goes on with the fields still pending.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from leukolens.analyze import NOT_WHITE
from leukolens.errors import LeukolensError
from leukolens.predict.cells import CellReader
from leukolens.predict.fields import SAMPLE_FIELDS, Detector
from leukolens.predict.output import field_json
from leukolens.predict.results import AnalyzedField, PredictedCell
from leukolens.sample.differential import differential, summary_json
from leukolens.sample.interpret import interpret
from leukolens.store import DONE, FAILED, QUEUED, RUNNING, Archive, FieldRecord
from leukolens.web.config import ServeConfig

log = logging.getLogger("leukolens.web")


class QueueFull(LeukolensError):
    """The analysis queue holds as many samples as it may (the service answers 503)."""


class Stopped(Exception):
    """The service is stopping: the sample goes back to ``queued`` and is resumed at the next start."""


@dataclass
class Models:
    """The models one worker loaded once: the detector and, when there is one, the cell reader."""

    detector: Detector
    reader: CellReader | None

    @classmethod
    def load(cls, config: ServeConfig) -> Models:
        detector = Detector.from_checkpoint(config.detector, engine=config.engine)
        try:
            reader = CellReader.from_checkpoint(config.cells, engine=config.engine)
        except LeukolensError as error:  # no shipped cell model: white cells are found, not typed
            log.warning("no cell model (%s): white cells are found but not typed", error)
            reader = None
        return cls(detector, reader)

    @property
    def detector_info(self) -> dict:
        return {"checkpoint": self.detector.path.name if self.detector.path else None,
                "score_threshold": self.detector.score_threshold, "classes": list(self.detector.classes)}

    @property
    def white(self) -> tuple[str, ...]:
        return tuple(c for c in self.detector.classes if c not in NOT_WHITE)


def open_field(archive: Archive, field: FieldRecord) -> Image.Image:
    """A stored field's image, RGB (it was decoded once at upload; this is the bytes read back by hash)."""
    if field.image_hash is None:
        raise LeukolensError(f"field {field.name!r} has no stored image")
    try:
        with Image.open(io.BytesIO(archive.read_image(field.image_hash))) as image:
            return image.convert("RGB")
    except OSError as error:
        raise LeukolensError(f"field {field.name!r}: cannot read its image ({error})") from None


def embeddings(cells: list[PredictedCell]) -> dict[int, np.ndarray]:
    """The cell model's embedding of each typed cell, by cell number: what "cells like this one" compares."""
    return {c.number: c.prediction.embedding for c in cells if c.prediction is not None}


def analyse_sample(archive: Archive, sample_id: str, models: Models, *,
                   stopping: Callable[[], bool] = lambda: False) -> None:
    """Analyse the pending fields of a sample, each stored as it is done, then store the summary and mark it done.

    Raises:
        Stopped: ``stopping()`` turned true between two fields (the completed ones are kept).
    """
    started = time.perf_counter()
    if archive.get_sample(sample_id).status != RUNNING:
        archive.set_status(sample_id, RUNNING)
    pending = archive.pending_fields(sample_id)
    notes = []
    scale = None
    if pending:
        first = [open_field(archive, f) for f in pending[:SAMPLE_FIELDS]]
        scale = models.detector.sample_scale(first)
        del first
    for field in pending:
        if stopping():
            raise Stopped(sample_id)
        image = open_field(archive, field)
        detections = models.detector.detect([image], field_scale=scale)[0]
        if models.reader is not None:
            cells = models.reader.read_cells([(image, detections)], read=models.white)[0]
            vectors = embeddings(cells)
        else:
            cells, vectors = [PredictedCell.detected(detections, i) for i in range(len(detections))], {}
        analysed = AnalyzedField(Path(field.name), image.width, image.height, cells=cells,
                                 notes=[] if models.reader else ["no cell model: white cells not typed"],
                                 scale=detections.scale, tiles=detections.tiles)
        archive.complete_field(field.id, field_json(analysed, models.detector_info), embeddings=vectors)
    if models.reader is None:
        notes.append("no cell model: white cells are found and counted but not typed")
    fields = archive.sample_fields(sample_id, reviewed=False)
    summary = summary_json(differential(fields), fields_read=len(fields), skipped=[], notes=notes,
                           detector=models.detector_info, seconds=time.perf_counter() - started,
                           interpretation=interpret(
                               fields, blast_call=models.reader.blast_call_rates if models.reader else None))
    archive.set_status(sample_id, DONE, summary=summary)


class AnalysisQueue:
    """A bounded queue of sample ids and the threads that analyse them."""

    def __init__(self, archive: Archive, config: ServeConfig) -> None:
        self.archive = archive
        self.config = config
        self._queue: queue.Queue[str] = queue.Queue(maxsize=config.queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._models_lock = threading.Lock()

    @property
    def full(self) -> bool:
        return self._queue.full()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, sample_id: str) -> None:
        """Queue a sample for analysis.

        Raises:
            QueueFull: the queue holds ``queue_size`` samples already.
        """
        try:
            self._queue.put_nowait(sample_id)
        except queue.Full:
            raise QueueFull(f"the analysis queue is full ({self.config.queue_size} samples waiting): "
                            "try again when some are done") from None

    def resume(self) -> list[str]:
        """Queue again the samples a stopped or killed service left ``running`` or ``queued``, oldest first;
        returns their ids (those beyond the queue's size are left queued for the next start)."""
        left = []
        for status in (RUNNING, QUEUED):
            left += [s.id for s in reversed(self.archive.list_samples(status=status, limit=1000))]
        resumed = []
        for sample_id in left:
            if self.archive.get_sample(sample_id).status == RUNNING:
                self.archive.set_status(sample_id, QUEUED)
            try:
                self.submit(sample_id)
            except QueueFull:
                break
            resumed.append(sample_id)
        return resumed

    def start(self) -> None:
        for n in range(self.config.workers):
            thread = threading.Thread(target=self._work, name=f"leukolens-analysis-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the workers to stop after their current field and wait for them."""
        self._stop.set()
        for _ in self._threads:
            try:
                self._queue.put_nowait("")  # wakes a worker waiting on an empty queue
            except queue.Full:
                pass
        for thread in self._threads:
            thread.join(timeout)

    def run_one(self, models: Models, *, block: bool = False) -> str | None:
        """Take one sample off the queue and analyse it; returns its id (None when the queue was empty)."""
        try:
            sample_id = self._queue.get(block=block, timeout=0.5 if block else None)
        except queue.Empty:
            return None
        if not sample_id:
            return None
        try:
            analyse_sample(self.archive, sample_id, models, stopping=self._stop.is_set)
        except Stopped:
            self.archive.set_status(sample_id, QUEUED)
        except Exception as error:  # one sample's failure is recorded on it; the worker goes on
            log.exception("analysis of sample %s failed", sample_id)
            message = str(error) if isinstance(error, LeukolensError) else f"{type(error).__name__}: {error}"
            try:
                self.archive.set_status(sample_id, FAILED, error=message[:2000])
            except Exception:
                log.exception("could not mark sample %s failed", sample_id)
        finally:
            self._queue.task_done()
        return sample_id

    def _work(self) -> None:
        models = None
        while not self._stop.is_set():
            if models is None:
                try:
                    with self._models_lock:  # one load at a time: they share the ONNX cache
                        models = Models.load(self.config)
                except Exception:
                    log.exception("the models could not be loaded; retrying in 30 s")
                    self._stop.wait(30)
                    continue
            self.run_one(models, block=True)
