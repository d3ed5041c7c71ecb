"""The FastAPI application: a JSON API under ``/api`` over the archive and the analysis queue, and one page at ``/``.

    >>> app = create_app(ServeConfig(data_dir="data", token="a-long-secret"))

Safe by default (docs/web.md): with a token every ``/api`` request needs ``Authorization: Bearer <token>``; request
bodies are capped (413 before the body is read whole); uploads are decoded and checked (:mod:`leukolens.web.uploads`);
images are reached only by hash through the archive, never by a path from a request; the analysis queue is bounded
(503 when full); every error is ``{"detail": message}``, never a stack trace.
"""


import json
import logging
import secrets
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from leukolens import __version__
from leukolens.errors import LeukolensError
from leukolens.store import (
    DONE,
    REVIEW_CALLS,
    STATUSES,
    Archive,
    ArchiveError,
    ConflictError,
    NotFoundError,
    SQLiteArchive,
)
from leukolens.web import views
from leukolens.web.config import ServeConfig
from leukolens.web.uploads import UploadError, check_image, field_name
from leukolens.web.worker import AnalysisQueue, QueueFull

log = logging.getLogger("leukolens.web")

MAX_JSON_BODY = 64 * 1024
"""The largest body of a request that is not an upload."""
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
     b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
]
CellId = Annotated[int, Path(ge=1, le=2**63 - 1)]
SampleId = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=200)]


class TooLarge(HTTPException):
    """A request body over its cap (raised while the body is being received, so it is never read whole)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit / 2**20:.1f} MiB: send fewer or smaller images "
                              "(the limit is set with --max-upload-mb)")


class Guard:
    """Pure ASGI middleware: caps request bodies as they arrive and adds security headers to every response."""

    def __init__(self, app, *, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["method"] == "POST" and scope["path"].rstrip("/") == "/api/samples"
        limit = self.upload_limit if upload else MAX_JSON_BODY

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            error = TooLarge(limit) if length.isdigit() else HTTPException(400, "bad Content-Length header")
            response = JSONResponse({"detail": error.detail}, status_code=error.status_code)
            return await response(scope, receive, send_with_headers)
        received = 0

        async def capped_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(limit)
            return message

        await self.app(scope, capped_receive, send_with_headers)


class Reclassification(BaseModel):
    type: str = Field(min_length=1, max_length=100, description="a type of the sample's cell model, or one of "
                      + ", ".join(REVIEW_CALLS))
    who: str = Field(min_length=1, max_length=200, description="the reviewer")


class SignRequest(BaseModel):
    who: str = Field(min_length=1, max_length=200)
    meaning: str = Field(default="reviewed and signed", min_length=1, max_length=200)


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"detail": message}`` with its status; anything unexpected as a 500 without a trace."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return _error(422, _validation_message(error))

    @app.exception_handler(LeukolensError)
    async def leukolens_error(request: Request, error: LeukolensError):
        if isinstance(error, NotFoundError):
            return _error(404, str(error))
        if isinstance(error, ConflictError):
            return _error(409, str(error))
        if isinstance(error, UploadError):
            return _error(error.status, str(error))
        if isinstance(error, QueueFull):
            return _error(503, str(error), {"Retry-After": "30"})
        return _error(400 if isinstance(error, ArchiveError) else 422, str(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return _error(500, "internal error: the service's log has the details")


def _page() -> str:
    return (resources.files("leukolens.web") / "static" / "index.html").read_text(encoding="utf-8")


def create_app(config: ServeConfig, *, archive: Archive | None = None) -> FastAPI:
    """The service: its archive (``config.data_dir`` unless given) and analysis queue are made here; starting
    the app (its lifespan) queues again the samples a previous run left unfinished and starts the workers."""
    archive = archive if archive is not None else SQLiteArchive.open(config.data_dir)
    analyses = AnalysisQueue(archive, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        resumed = analyses.resume()
        if resumed:
            log.info("resuming %d unfinished samples", len(resumed))
        if config.start_workers:
            analyses.start()
        yield
        analyses.stop()

    app = FastAPI(title="leukolens", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Blood smear analysis: upload a sample's fields, review its cells, sign it.")
    app.state.archive, app.state.queue, app.state.config = archive, analyses, config
    app.add_middleware(Guard, upload_limit=config.max_upload_bytes)
    add_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="the token given to `leukolens serve --token`")

    def require_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if config.token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, config.token.encode()):
            raise HTTPException(401, "a valid token is needed: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    def done_sample(sample_id: str):
        record = archive.get_sample(sample_id)
        if record.status != DONE:
            raise ConflictError(f"sample {sample_id} is {record.status}, not done yet")
        return record

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(_page())

    @api.post("/samples", status_code=202, summary="Upload a sample's fields for analysis")
    def upload(files: Annotated[list[UploadFile], File(description="one or more field images")],
               name: Annotated[str, Form(max_length=200)] = "") -> dict:
        if len(files) > config.max_files:
            raise HTTPException(413, f"{len(files)} files: at most {config.max_files} fields per sample")
        if analyses.full:
            raise QueueFull(f"the analysis queue is full ({config.queue_size} samples waiting): try again later")
        used: set[str] = set()
        checked = []
        for position, upload_file in enumerate(files):
            label = field_name(upload_file.filename, position, used)
            checked.append(check_image(label, upload_file.file.read(config.max_upload_bytes + 1)))
        images = [(image.name, archive.put_image(image.data)) for image in checked]
        sample_id = archive.create_sample(images=images, name=name.strip() or checked[0].name)
        try:
            analyses.submit(sample_id)
        except QueueFull:
            archive.set_status(sample_id, "failed", error="the analysis queue was full")
            raise
        return {"id": sample_id, "status": "queued"}

    @api.get("/samples", summary="The archived samples, newest first")
    def list_samples(status: Literal[STATUSES] | None = None, limit: Limit = 50,  # type: ignore[valid-type]
                     offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict:
        records = archive.list_samples(status=status, limit=limit, offset=offset)
        return {"samples": [views.sample_json(r) for r in records], "queue": analyses.waiting}

    @api.get("/samples/{sample_id}", summary="A sample: status, fields and the summary with the reviews applied")
    def get_sample(sample_id: SampleId) -> dict:
        return views.sample_detail(archive, archive.get_sample(sample_id))

    @api.get("/samples/{sample_id}/cells", summary="Every cell of a sample, the reviewer's call beside the model's")
    def sample_cells(sample_id: SampleId) -> dict:
        archive.get_sample(sample_id)
        types = archive.review_types(sample_id) if hasattr(archive, "review_types") else REVIEW_CALLS
        return {"cells": [views.cell_json(c) for c in archive.cells(sample_id)], "review_calls": list(types)}

    @api.get("/samples/{sample_id}/audit", summary="Who changed what, oldest first")
    def audit(sample_id: SampleId) -> dict:
        archive.get_sample(sample_id)
        return {"audit": [asdict(a) for a in archive.audit_log(sample_id)]}

    @api.post("/samples/{sample_id}/sign", summary="Mark a done sample reviewed and signed")
    def sign(sample_id: SampleId, body: SignRequest) -> dict:
        return asdict(archive.sign(sample_id, who=body.who, meaning=body.meaning))

    @api.get("/samples/{sample_id}/report", response_class=HTMLResponse, summary="The sample's HTML report")
    def report(sample_id: SampleId) -> HTMLResponse:
        record = done_sample(sample_id)
        return HTMLResponse(views.report(archive, record), headers=_attachment(f"{sample_id}.html"))

    @api.get("/samples/{sample_id}/json", summary="Everything stored about a sample, as one JSON file")
    def sample_document(sample_id: SampleId) -> Response:
        record = done_sample(sample_id)
        return Response(views.sample_document(archive, record), media_type="application/json",
                        headers=_attachment(f"{sample_id}.json"))

    @api.get("/samples/{sample_id}/csv", summary="One row per cell, for spreadsheets")
    def sample_csv(sample_id: SampleId) -> Response:
        record = done_sample(sample_id)
        return Response(views.cells_csv(archive, record), media_type="text/csv; charset=utf-8",
                        headers=_attachment(f"{sample_id}.csv"))

    @api.get("/cells/{cell_id}", summary="One cell")
    def get_cell(cell_id: CellId) -> dict:
        return views.cell_json(archive.cell(cell_id))

    @api.patch("/cells/{cell_id}", summary="Reclassify a cell (409 once its sample is signed)")
    def reclassify(cell_id: CellId, body: Reclassification) -> dict:
        cell = archive.reclassify(cell_id, body.type, who=body.who)
        record = archive.get_sample(cell.sample_id)
        return {"cell": views.cell_json(cell), "summary": views.reviewed_summary(archive, record)}

    @api.get("/cells/{cell_id}/image", response_class=Response, summary="The cell's crop (JPEG)")
    def cell_image(cell_id: CellId) -> Response:
        return Response(views.cell_image(archive, archive.cell(cell_id)), media_type="image/jpeg")

    @api.get("/cells/{cell_id}/similar", summary="Cells like this one (by the cell model's embedding)")
    def similar(cell_id: CellId, limit: Limit = 20) -> dict:
        return {"hits": [views.hit_json(h) for h in archive.similar_cells(cell_id, limit=limit)]}

    @api.get("/fields/{field_id}/image", response_class=Response, summary="The field (JPEG)")
    def field_image(field_id: CellId) -> Response:
        return Response(views.field_image(archive, archive.field(field_id), overlay=False), media_type="image/jpeg")

    @api.get("/fields/{field_id}/overlay", response_class=Response, summary="The field with its cells (JPEG)")
    def field_overlay(field_id: CellId) -> Response:
        return Response(views.field_image(archive, archive.field(field_id), overlay=True), media_type="image/jpeg")

    @api.get("/search", summary="Search every archived cell by text")
    def search(q: Annotated[str, Query(min_length=1, max_length=500)], limit: Limit = 20) -> dict:
        return {"hits": [views.hit_json(h) for h in archive.search_text(q, limit=limit)]}

    @api.get("/status", summary="The service: version, queue, limits")
    def service_status() -> dict:
        return {"version": __version__, "queue": analyses.waiting, "queue_size": config.queue_size,
                "max_upload_mb": config.max_upload_mb, "max_files": config.max_files,
                "review_calls": list(REVIEW_CALLS)}

    app.include_router(api)
    return app


def _attachment(filename: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="{json.dumps(filename)[1:-1]}"'}
