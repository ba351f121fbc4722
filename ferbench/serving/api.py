"""The model over HTTP: `ferbench-serve`, FastAPI on uvicorn, the same inference core as the CLI and the app.

Endpoints (version 1, OpenAPI at /docs and /openapi.json):
  GET  /v1/health                       liveness: the process answers
  GET  /v1/ready                        readiness: 200 once the model and the face detector are loaded, else 503
  GET  /v1/model                        the model card: what it is, what it learned from, its accuracy, its limits
  POST /v1/predict                      one photo (multipart `file`): every face, as `ferbench-predict` prints it
  POST /v1/predict/batch                several photos (multipart `files`) in one request: a record per photo
  POST /v1/videos                       a video (multipart `file`): a job, answered 202 with its id
  GET  /v1/videos/{job}                 the job's status and progress; when done, its summary and result links
  GET  /v1/videos/{job}/faces.csv       a row per face and analysed frame
  GET  /v1/videos/{job}/tracks.csv      a row per track
  GET  /v1/videos/{job}/timelines/{n}   track n's timeline (PNG)

Safe by default: it binds to 127.0.0.1; an API key (`--api-key` or $FERBENCH_API_KEY, compared in constant
time) guards everything but health and readiness; request bodies, image pixels, batch sizes, video length,
jobs queued and kept, and time per request are bounded; nothing a client sends names a path on the server
(uploads and results live in the server's own temporary folder, removed at shutdown). Every error is JSON,
`{"error": "one line"}`, with its status: 400 unreadable, 401 no or wrong key, 404 unknown job, 413 too
large, 415 not an image or video, 422 bad options, 429 job queue full, 503 busy, loading or too slow.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ferbench.data.decode import DEFAULT_PHOTO_PIXELS, ImageTooLarge, UndecodableImage, decode_rgb
from ferbench.errors import FerbenchError
from ferbench.files import printable
from ferbench.models.folder import EmotionModel
from ferbench.serving.faces import DETECTORS, WholeImage, build_detector
from ferbench.serving.inference import MODEL_ORDER, EmotionRecognizer, choose_model_folder
from ferbench.serving.predict import faces_record
from ferbench.serving.video import (
    TABLE_FILE,
    TRACKS_FILE,
    VIDEO_SUFFIXES,
    VideoOptions,
    analyse_video,
)

API = "/v1"
API_KEY_ENV = "FERBENCH_API_KEY"
OPEN_PATHS = (f"{API}/health", f"{API}/ready")  # what a load balancer probes without a key


@dataclass(frozen=True)
class ServeLimits:
    """Every bound the server keeps (the CLI's flags)."""

    photo_mb: float = 10.0  # one photo's upload
    batch_files: int = 16  # photos in one batch request
    video_mb: float = 200.0  # one video's upload
    max_pixels: int = DEFAULT_PHOTO_PIXELS  # a photo's pixels, as the CLI's --max-pixels
    video_seconds: float = 600.0  # of a video analysed; the rest is left out (and said)
    jobs: int = 4  # video jobs queued or running at once (one runs at a time)
    job_ttl_s: float = 3600.0  # a finished job's results are deleted this long after it ended
    workers: int = os.cpu_count() or 1  # photos analysed at once
    waiting: int = 64  # requests that may wait for a worker; more get 503
    request_timeout_s: float = 60.0  # a photo request's time, waiting included

    def body_limit(self, path: str) -> int:
        """The most bytes a request to `path` may send (multipart overhead included)."""
        if path.startswith(f"{API}/videos"):
            megabytes = self.video_mb
        elif path == f"{API}/predict/batch":
            megabytes = self.photo_mb * self.batch_files
        else:
            megabytes = self.photo_mb
        return int(megabytes * 2**20) + 64 * 1024


class ApiError(Exception):
    """An error answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Response models: what /openapi.json tells a client generator.


class FaceOut(BaseModel):
    track: int | None = None
    box: list[int] = Field(description="x, y, width, height in pixels of the image")
    label: str
    probabilities: dict[str, float] = Field(description="calibrated, summing to 1, in the card's class order")


class PhotoOut(BaseModel):
    file: str = Field(description="the upload's file name, as the client sent it")
    faces: list[FaceOut] | None = None
    note: str | None = None
    error: str | None = None


class BatchOut(BaseModel):
    results: list[PhotoOut]


class ModelOut(BaseModel):
    summary: str
    backbone: str
    variant: str
    runtime: str
    classes: list[str]
    test_accuracy: float | None
    test_accuracy_leakage_free: float | None
    trained_on: str | None
    limitations: list[str]
    card: dict[str, Any] = Field(description="the whole model card (model_card.json)")


class Health(BaseModel):
    status: Literal["ok", "loading", "failed"]
    detail: str | None = None


class JobOut(BaseModel):
    job: str
    status: Literal["queued", "running", "done", "failed"]
    progress: float = Field(description="share of the frames read, 0 to 1")
    frames_done: int
    frames_total: int
    error: str | None = None
    note: str | None = None
    summary: dict[str, Any] | None = Field(None, description="when done: what `ferbench-predict` prints for a video")
    results: dict[str, str] | None = Field(None, description="when done: the result files' URLs")


class ErrorOut(BaseModel):
    error: str


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 415, 422, 429, 503)}


@dataclass
class Job:
    job_id: str
    folder: Path
    status: str = "queued"
    frames_done: int = 0
    frames_total: int = 0
    error: str | None = None
    note: str | None = None
    summary: dict[str, Any] | None = None
    timelines: list[int] = field(default_factory=list)
    ended: float | None = None

    def out(self) -> JobOut:
        results = None
        if self.status == "done":
            base = f"{API}/videos/{self.job_id}"
            results = {"faces": f"{base}/{TABLE_FILE}", "tracks": f"{base}/{TRACKS_FILE}"}
            results |= {f"timeline_{track}": f"{base}/timelines/{track}" for track in self.timelines}
        progress = self.frames_done / self.frames_total if self.frames_total else float(self.status == "done")
        return JobOut(
            job=self.job_id,
            status=self.status,  # type: ignore[arg-type]
            progress=round(min(1.0, progress), 4),
            frames_done=self.frames_done,
            frames_total=self.frames_total,
            error=self.error,
            note=self.note,
            summary=self.summary,
            results=results,
        )


class JobStopped(Exception):
    """The server is shutting down: the running video job stops at its next frame."""


class Server:
    """The loaded model, a pool of recognizers (one detector each: OpenCV's are not thread-safe) and the
    video jobs. Loads in a background thread, so liveness answers at once and readiness once loaded."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.limits = settings.limits
        self._scratch: Path | None = None
        self.model: EmotionModel | None = None
        self.load_error: str | None = None
        self.pool: SimpleQueue[EmotionRecognizer] = SimpleQueue()
        self.whole_images: SimpleQueue[EmotionRecognizer] = SimpleQueue()
        self.workers = anyio.CapacityLimiter(self.limits.workers)
        self.waiting = 0
        self.jobs: dict[str, Job] = {}
        self.jobs_lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-job")
        self.stopping = threading.Event()

    def start(self) -> None:
        """Serving begins: the temporary folder for the video jobs' files (removed at shutdown) and the model
        loading in the background. An app built but never served makes neither."""
        self._scratch = Path(tempfile.mkdtemp(prefix="ferbench-serve-"))
        threading.Thread(target=self.load, name="load-model", daemon=True).start()

    @property
    def scratch(self) -> Path:
        if self._scratch is None:
            raise RuntimeError("the server has not started: serve its app (the app's lifespan starts it)")
        return self._scratch

    def load(self) -> None:
        try:
            model = EmotionModel(self.settings.model, threads=self.settings.threads)
            for _ in range(self.limits.workers):
                detector = build_detector(self.settings.detector, model_file=self.settings.detector_model)
                self.pool.put(EmotionRecognizer(model, detector, smoothing=0.0))
                self.whole_images.put(EmotionRecognizer(model, WholeImage(), smoothing=0.0))
            self.model = model
        except FerbenchError as exc:
            self.load_error = printable(exc)
            print(f"serve: error: {self.load_error}", file=sys.stderr)

    def health(self) -> Health:
        if self.model is not None:
            return Health(status="ok")
        if self.load_error is not None:
            return Health(status="failed", detail=self.load_error)
        return Health(status="loading")

    def ready_model(self) -> EmotionModel:
        if self.model is None:
            raise ApiError(503, self.load_error or "the model is still loading; retry in a few seconds")
        return self.model

    async def analyse(self, photos: list[tuple[str, bytes]], whole_image: bool) -> list[dict[str, Any]]:
        """Records of the photos, on one worker (at most `workers` at once; 503 past `waiting` waiting)."""
        self.ready_model()
        if self.waiting >= self.limits.waiting:
            raise ApiError(503, f"busy: {self.waiting} requests are waiting; retry later")
        self.waiting += 1
        try:
            with anyio.fail_after(self.limits.request_timeout_s):
                async with self.workers:
                    return await anyio.to_thread.run_sync(self._analyse, photos, whole_image, abandon_on_cancel=True)
        except TimeoutError:
            raise ApiError(503, f"the request took over {self.limits.request_timeout_s:g} s; retry later") from None
        finally:
            self.waiting -= 1

    def _analyse(self, photos: list[tuple[str, bytes]], whole_image: bool) -> list[dict[str, Any]]:
        pool = self.whole_images if whole_image else self.pool
        recognizer = pool.get()
        try:
            return [self._photo(recognizer, name, data) for name, data in photos]
        finally:
            pool.put(recognizer)

    def _photo(self, recognizer: EmotionRecognizer, name: str, data: bytes) -> dict[str, Any]:
        if len(data) > self.limits.photo_mb * 2**20:
            return {"file": name, "error": f"too large (over {self.limits.photo_mb:g} MB)", "status": 413}
        try:
            rgb = decode_rgb(data, self.limits.max_pixels)
        except ImageTooLarge as exc:
            return {"file": name, "error": str(exc), "status": 413}
        except UndecodableImage as exc:
            return {"file": name, "error": str(exc), "status": 400}
        try:
            return faces_record(recognizer, name, rgb)
        except FerbenchError as exc:  # the model answered NaN: the server's fault, not the photo's
            raise ApiError(503, printable(exc)) from None

    # Video jobs.

    def submit(self, name: str, upload: Path) -> Job:
        self.ready_model()
        self.expire_jobs()
        with self.jobs_lock:
            active = sum(job.status in ("queued", "running") for job in self.jobs.values())
            if active >= self.limits.jobs:
                raise ApiError(429, f"{active} video jobs are queued or running (the limit); retry when one ends")
            job = Job(uuid.uuid4().hex, upload.parent)
            self.jobs[job.job_id] = job
        self.executor.submit(self._run_job, job, upload)
        return job

    def _run_job(self, job: Job, upload: Path) -> None:
        if self.stopping.is_set():
            return
        job.status = "running"

        def progress(done: int, total: int, step: str) -> None:
            if self.stopping.is_set():
                raise JobStopped
            if step == "frame":
                job.frames_done, job.frames_total = done, total

        try:
            detector = build_detector(self.settings.detector, video=True, model_file=self.settings.detector_model)
            recognizer = EmotionRecognizer(self.ready_model(), detector)
            options = VideoOptions(end=self.limits.video_seconds)
            result = analyse_video(upload, recognizer, job.folder / "out", options, progress)
            summary = result.to_dict()
            summary.pop("out")  # a path on the server: the result URLs stand for it
            if result.info.duration > self.limits.video_seconds:
                job.note = f"only the first {self.limits.video_seconds:g} s of {result.info.duration:.0f} s analysed"
            job.summary, job.status = summary, "done"
            job.timelines = sorted(int(p.stem.rsplit("-", 1)[1]) for p in (job.folder / "out").glob("timeline-*.png"))
        except JobStopped:
            job.status, job.error = "failed", "the server shut down while the job ran"
        except (FerbenchError, ApiError) as exc:
            job.status, job.error = "failed", printable(exc).replace(str(upload), "the upload")
        except Exception as exc:  # OpenCV and FFmpeg fail in their own ways on odd files: the job fails, not the server
            job.status, job.error = "failed", f"cannot analyse the video ({type(exc).__name__})"
        finally:
            upload.unlink(missing_ok=True)
            job.ended = time.monotonic()

    def job(self, job_id: str) -> Job:
        self.expire_jobs()
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (unknown, or its results expired)")
        return job

    def expire_jobs(self) -> None:
        """Delete the results of jobs that ended more than `job_ttl_s` ago."""
        now = time.monotonic()
        with self.jobs_lock:
            expired = [job for job in self.jobs.values() if job.ended and now - job.ended > self.limits.job_ttl_s]
            for job in expired:
                del self.jobs[job.job_id]
        for job in expired:
            shutil.rmtree(job.folder, ignore_errors=True)

    def shutdown(self) -> None:
        """Stop the running job (marked failed), drop the queued ones, remove every temporary file."""
        self.stopping.set()
        for job in self.jobs.values():
            if job.status == "queued":
                job.status, job.error = "failed", "the server shut down before the job ran"
        self.executor.shutdown(wait=True, cancel_futures=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


@dataclass(frozen=True)
class ServeSettings:
    model: Path
    origin: str = "--model"
    detector: str = "yunet"
    detector_model: Path | None = None
    threads: int = 1  # the model's CPU threads per request: with several workers, 1 each uses the cores best
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    limits: ServeLimits = ServeLimits()


def create_app(settings: ServeSettings) -> FastAPI:
    """The FastAPI application serving `settings.model`; the model loads in the background at start."""
    server = Server(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.start()
        yield
        server.shutdown()

    app = FastAPI(
        title="ferbench",
        version="1",
        description="Facial emotion recognition (7 FER-2013 emotions) on photos and videos. Every error is "
        '`{"error": "..."}`.',
        lifespan=lifespan,
    )
    app.state.server = server
    install_guards(app, settings)

    def authorised(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send it as the X-API-Key header)")

    guarded = [Depends(authorised)]
    photos: dict[str, Any] = {"responses": ERRORS, "dependencies": guarded, "tags": ["photos"]}

    @app.get(f"{API}/health", response_model=Health, response_model_exclude_none=True, tags=["health"])
    def health() -> Health:
        """Liveness: the process answers (the model may still be loading)."""
        return server.health()

    @app.get(f"{API}/ready", response_model=Health, response_model_exclude_none=True, responses=ERRORS, tags=["health"])
    def ready() -> Any:
        """Readiness: 200 once the model and the face detector are loaded, 503 before (or if loading failed)."""
        state = server.health()
        return state if state.status == "ok" else JSONResponse(state.model_dump(exclude_none=True), status_code=503)

    @app.get(f"{API}/model", response_model=ModelOut, responses=ERRORS, dependencies=guarded, tags=["model"])
    def model_card() -> ModelOut:
        """The model card: what the model is, what it learned from, its accuracy and its limits."""
        card = server.ready_model().card
        data = card.provenance.data if card.provenance else None
        return ModelOut(
            summary=card.summary(),
            backbone=card.backbone,
            variant=card.variant,
            runtime=card.runtime,
            classes=list(card.classes),
            test_accuracy=card.metrics.test_accuracy if card.metrics else None,
            test_accuracy_leakage_free=card.metrics.test_leakage_free_accuracy if card.metrics else None,
            trained_on=data.source if data else None,
            limitations=list(card.limitations),
            card=card.model_dump(mode="json", exclude_unset=True),
        )

    add_photo_routes(app, server, photos)
    add_video_routes(app, server, guarded)
    return app


def add_photo_routes(app: FastAPI, server: Server, photos: dict[str, Any]) -> None:
    """/v1/predict and /v1/predict/batch."""
    settings = server.settings

    @app.post(f"{API}/predict", response_model=PhotoOut, response_model_exclude_none=True, **photos)
    async def predict(
        file: Annotated[UploadFile, File(description="a photo: JPEG, PNG, BMP, WebP, TIFF or GIF")],
        whole_image: Annotated[bool, Query(description="the image is one cropped face: skip detection")] = False,
    ) -> Any:
        """Every face in one photo: box, label and calibrated probabilities (what `ferbench-predict` prints)."""
        (record,) = await server.analyse([await read_photo(file, settings.limits)], whole_image)
        if "status" in record:
            raise ApiError(record["status"], f"{printable(record['file'])}: {record['error']}")
        return record

    @app.post(f"{API}/predict/batch", response_model=BatchOut, response_model_exclude_none=True, **photos)
    async def predict_batch(
        files: Annotated[list[UploadFile], File(description="photos, one record each, in order")],
        whole_image: Annotated[bool, Query(description="each image is one cropped face: skip detection")] = False,
    ) -> BatchOut:
        """Several photos in one request: a record per photo; one that cannot be read gets an `error`."""
        if len(files) > settings.limits.batch_files:
            raise ApiError(413, f"{len(files)} files; at most {settings.limits.batch_files} in one batch")
        photos = [await read_photo(upload, settings.limits) for upload in files]
        records = await server.analyse(photos, whole_image)
        return BatchOut(results=[PhotoOut(**{k: v for k, v in r.items() if k != "status"}) for r in records])


def add_video_routes(app: FastAPI, server: Server, guarded: list[Any]) -> None:
    """/v1/videos: submit a job, its status, its tables and timelines."""

    @app.post(
        f"{API}/videos", response_model=JobOut, status_code=202, responses=ERRORS, dependencies=guarded,
        tags=["videos"],
    )  # fmt: skip
    async def submit_video(
        file: Annotated[UploadFile, File(description="a video: " + " ".join(VIDEO_SUFFIXES))],
    ) -> JobOut:
        """Start analysing a video; poll the job for its progress, then fetch its results."""
        suffix = Path(file.filename or "").suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise ApiError(
                415, f"not a video file name ({suffix or 'no suffix'}); use one of {' '.join(VIDEO_SUFFIXES)}"
            )
        folder = Path(tempfile.mkdtemp(dir=server.scratch, prefix="job-"))
        upload = folder / f"upload{suffix}"  # the server's own name: nothing the client sends names a path
        with upload.open("wb") as handle:
            while block := await file.read(1 << 20):
                handle.write(block)
        return server.submit(file.filename or "video", upload).out()

    @app.get(f"{API}/videos/{{job}}", response_model=JobOut, responses=ERRORS, dependencies=guarded, tags=["videos"])
    def video_job(job: str) -> JobOut:
        """A job's status and progress; when done, its summary and the URLs of its results."""
        return server.job(check_job_id(job)).out()

    @app.get(f"{API}/videos/{{job}}/{{name}}", responses=ERRORS, dependencies=guarded, tags=["videos"])
    def video_table(job: str, name: Literal["faces.csv", "tracks.csv"]) -> FileResponse:
        """`faces.csv` (a row per face and analysed frame) or `tracks.csv` (a row per track)."""
        return FileResponse(finished(server.job(check_job_id(job))) / name, media_type="text/csv", filename=name)

    @app.get(f"{API}/videos/{{job}}/timelines/{{track}}", responses=ERRORS, dependencies=guarded, tags=["videos"])
    def video_timeline(job: str, track: int) -> FileResponse:
        """Track `track`'s probabilities against time (PNG; the longest tracks have one)."""
        path = finished(server.job(check_job_id(job))) / f"timeline-track-{track}.png"
        if not path.is_file():
            raise ApiError(
                404, f"no timeline for track {track} (tracks shorter than 1 s, or beyond the longest, have none)"
            )
        return FileResponse(path, media_type="image/png")


JOB_ID = re.compile(r"[0-9a-f]{32}")


def check_job_id(job: str) -> str:
    if not JOB_ID.fullmatch(job):
        raise ApiError(404, "no such job (a job id is 32 hexadecimal digits)")
    return job


def finished(job: Job) -> Path:
    if job.status != "done":
        raise ApiError(404, f"job {job.job_id} is {job.status}; its results exist once it is done")
    return job.folder / "out"


async def read_photo(upload: UploadFile, limits: ServeLimits) -> tuple[str, bytes]:
    """An upload's name and bytes (at most the photo limit and one byte more, so an oversize one is seen)."""
    kind = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise ApiError(415, f"{printable(upload.filename)}: {kind} is not an image; send a photo (JPEG, PNG, ...)")
    return upload.filename or "upload", await upload.read(int(limits.photo_mb * 2**20) + 1)


def install_guards(app: FastAPI, settings: ServeSettings) -> None:
    """JSON errors for everything, and a body-size limit enforced while the body streams in."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_options(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server goes on"}, status_code=500)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"])
    app.add_middleware(BodyLimit, limits=settings.limits)


class BodyLimit:
    """413 for a request body over the limit of its path: by Content-Length before reading, and by counting
    while it streams (a chunked upload has no length)."""

    def __init__(self, app: Callable[..., Awaitable[None]], limits: ServeLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.body_limit(scope["path"])
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_large(send, limit)
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await too_large(send, limit)


class BodyTooLarge(Exception):
    pass


async def too_large(send: Callable, limit: int) -> None:
    body = ('{"error": "the request body is over %.0f MB, the limit for this endpoint"}' % (limit / 2**20)).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ferbench-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help=f"model folder with model_card.json (default: {MODEL_ORDER})")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="photos analysed at once (default: the CPU count)"
    )
    parser.add_argument(
        "--api-key", help=f"require this key (X-API-Key header) on every endpoint but health; default ${API_KEY_ENV}"
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="URL",
        help="allow browser pages from this origin (repeatable; default none)",
    )
    parser.add_argument("--detector", choices=DETECTORS, default="yunet", help="face detector (default yunet)")
    parser.add_argument("--detector-model", type=Path, metavar="FILE", help="local YuNet model file for offline use")
    parser.add_argument(
        "--photo-mb", type=float, default=ServeLimits.photo_mb, help="largest photo upload in MB (default 10)"
    )
    parser.add_argument(
        "--video-mb", type=float, default=ServeLimits.video_mb, help="largest video upload in MB (default 200)"
    )
    parser.add_argument(
        "--video-seconds",
        type=float,
        default=ServeLimits.video_seconds,
        help="seconds of a video analysed at most (default 600)",
    )
    parser.add_argument(
        "--jobs", type=int, default=ServeLimits.jobs, help="video jobs queued or running at once (default 4)"
    )
    parser.add_argument(
        "--job-ttl",
        type=float,
        default=ServeLimits.job_ttl_s,
        help="seconds a finished job's results are kept (default 3600)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=ServeLimits.request_timeout_s,
        help="seconds a photo request may take (default 60)",
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except FerbenchError as exc:
        print(f"serve: error: {printable(exc)}", file=sys.stderr)
        return 2
    import uvicorn

    app = create_app(settings)
    summary = read_summary(settings.model)
    print(f"serve: model {printable(settings.model)} ({settings.origin}): {summary}", file=sys.stderr)
    print(
        f"serve: http://{args.host}:{args.port}{API}/  (OpenAPI: http://{args.host}:{args.port}/docs)", file=sys.stderr
    )
    if not is_loopback(args.host) and settings.api_key is None:
        print(
            f"serve: warning: listening on {args.host} beyond this machine with no API key; anyone who can reach "
            f"it can use it (set --api-key or ${API_KEY_ENV})",
            file=sys.stderr,
        )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """The settings, every number range-checked, the model folder's card read once to fail early."""
    checks = [
        ("--port", args.port, 1, 65535),
        ("--workers", args.workers, 1, 64),
        ("--photo-mb", args.photo_mb, 0.01, 100),
        ("--video-mb", args.video_mb, 0.01, 4096),
        ("--video-seconds", args.video_seconds, 1, 24 * 3600),
        ("--jobs", args.jobs, 1, 64),
        ("--job-ttl", args.job_ttl, 1, 7 * 24 * 3600),
        ("--timeout", args.timeout, 1, 3600),
    ]
    for flag, value, low, high in checks:
        if not low <= value <= high:
            raise FerbenchError(f"{flag} {value}: use {low:g} to {high:g}")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is not None and len(api_key) < 16:
        raise FerbenchError(
            "the API key is shorter than 16 characters; use a long random one (e.g. openssl rand -hex 16)"
        )
    choice = choose_model_folder(args.model)
    limits = ServeLimits(
        photo_mb=args.photo_mb,
        video_mb=args.video_mb,
        video_seconds=args.video_seconds,
        jobs=args.jobs,
        job_ttl_s=args.job_ttl,
        workers=args.workers,
        request_timeout_s=args.timeout,
    )
    settings = ServeSettings(
        choice.folder, choice.origin, args.detector, args.detector_model, 1, api_key, tuple(args.cors_origin), limits
    )
    read_summary(settings.model)
    return settings


def read_summary(folder: Path) -> str:
    from ferbench.models.folder import read_card

    return printable(read_card(folder).summary())


if __name__ == "__main__":
    sys.exit(main())
