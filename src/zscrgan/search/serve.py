"""`zscrgan serve`: an index folder as an HTTP API and a one-page search site (FastAPI + uvicorn).

    zscrgan serve photos_index [--host 127.0.0.1] [--port 8000] [--workers N]

    GET  /            the search page (static/index.html: no build step, nothing from a CDN)
    GET  /health      {"status": "ok", "photos": N}
    GET  /info        the index manifest, its counts and this worker's pid and batches (absolute
                      paths as their last part, unless --show_paths)
    POST /search      {text | like_id | class_id, k, min_score} ->
                      {results: [{id, path, score, thumb, class}], explanations, took_ms}
                      with a Server-Timing header: queue, encode, embed, search, fetch, total
    GET  /thumb/{id}  the JPEG thumbnail of a photo
    GET  /photo/{id}  the photo itself, typed by its own header (image/jpeg, image/png, ...)
    GET  /docs        OpenAPI documentation

Speed: concurrent queries are answered in batches by one model thread (:mod:`zscrgan.search.batcher`);
the cheap paths (health, info, thumbnails, photos) never touch the model. ``--workers N`` runs
N processes over the same folder, each with its own model (an ivfpq index is memory-mapped,
so its lists are shared through the page cache; exact and ivf indexes are loaded by each).

Safety: binds 127.0.0.1 unless told otherwise (any other address: a one-line warning, as there
is no authentication); photos are addressed by integer id only, so no client string ever becomes
a file path; bodies over 64 KiB, texts over 1,000 characters and k outside 1..1000 are refused;
a body not received within ``--body_timeout`` seconds, or headers within ``--header_timeout``, is
answered 408 and its connection closed; past ``--max_connections`` open connections a new one is
answered 503 (:mod:`zscrgan.search.connections`); every error is a JSON body {"detail": ...} with
a 4xx/5xx code, never a traceback. Every response carries ``X-Content-Type-Options: nosniff``;
/photo's type is the format its file's header announces (never its name), and the page's
Content-Security-Policy allows only its own inline script and style (by hash) and same-origin
requests: a file in the photo folder cannot become a page of this origin (docs/threat_model.md).
"""

import asyncio
import base64
import gc
import hashlib
import ipaddress
import json
import os
import re
import sys
import typing
from importlib import resources
from pathlib import Path

import torch

from zscrgan.console import Parser
from zscrgan.data.photos import IMAGE_TYPES, open_photo, shown
from zscrgan.errors import DataError, UserError, require
from zscrgan.search import connections
from zscrgan.search.batcher import MAX_BATCH, STAGES, WAIT_MS, Batcher, Query, Refusal
from zscrgan.search.reader import MAX_K, MAX_TEXT, IndexReader, check_texts

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0  # seconds to receive a whole request body
ENV = "ZSCRGAN_SERVE"  # --workers: the options each worker process builds its app from
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]  # on every response (Guard)
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger photo id is no photo, not an OverflowError


def _json(status: int, body: dict, headers: list | None = None) -> dict:
    return {"status": status, "body": json.dumps(body).encode(), "headers": headers or []}


class Guard:
    """ASGI middleware (not Starlette's BaseHTTPMiddleware, which costs a task per request):
    reads a request body whole, refusing one over ``max_body`` (413) or not received within
    ``timeout`` seconds (408, connection closed), so a slow client holds a coroutine, not a worker;
    and adds SECURITY_HEADERS to every response."""

    def __init__(self, app, max_body: int = MAX_BODY, timeout: float = BODY_TIMEOUT):
        self.app, self.max_body, self.timeout = app, max_body, timeout
        self.too_big = _json(413, {"detail": f"request body over {max_body} bytes"})  # built once, not per POST

    async def __call__(self, scope, receive, send_raw):
        if scope["type"] != "http":
            return await self.app(scope, receive, send_raw)

        async def send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send_raw(message)

        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self._reply(send, self.too_big)
        try:
            body = await asyncio.wait_for(self._read(receive), self.timeout)
        except TimeoutError:
            return await self._reply(send, _json(408, {"detail": f"request body not received within {self.timeout:g} s"},
                                                 [(b"connection", b"close")]))
        except OverflowError:
            return await self._reply(send, self.too_big)
        except ConnectionError:
            return  # the client left
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _read(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                raise OverflowError
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _reply(send, reply: dict) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply["body"])).encode()),
                   *reply["headers"]]  # send adds nosniff
        await send({"type": "http.response.start", "status": reply["status"], "headers": headers})
        await send({"type": "http.response.body", "body": reply["body"]})


def _serve_extra(module: str):
    return require(module, "serve", "zscrgan serve")


def server_timing(timing: dict) -> str:
    """``queue;dur=0.4, encode;dur=12.1, ...`` in milliseconds: where a query's time went."""
    queue = timing["total"] - sum(timing[s] for s in STAGES)
    parts = [("queue", max(0.0, queue)), *((s, timing[s]) for s in STAGES), ("total", timing["total"])]
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in parts)


def page_policy(page: str) -> str:
    """The page's Content-Security-Policy: its own inline <script> and <style> blocks by SHA-256 (so
    no other script runs, whatever a response injects), requests and images from this origin only."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}[^>]*>(.*?)</{tag}>", page, re.S)
        digests = [base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() for block in blocks]
        return " ".join(f"'sha256-{d}'" for d in digests) or "'none'"

    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; img-src 'self'; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def without_paths(value):
    """``value`` (the manifest) with every absolute path cut to its last part: a public server need
    not tell where its checkpoint, data set and photos lie on disk."""
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_paths(item) for item in value]
    return Path(value).name if isinstance(value, str) and os.path.isabs(value) else value


def create_app(reader: IndexReader, max_batch: int = MAX_BATCH, wait_ms: float = WAIT_MS,
               body_timeout: float = BODY_TIMEOUT, show_paths: bool = False):
    """The FastAPI app over an opened index (tests build it directly, without a socket)."""
    fastapi, pydantic = _serve_extra("fastapi"), _serve_extra("pydantic")
    FastAPI, Request = fastapi.FastAPI, fastapi.Request
    jsonable_encoder = _serve_extra("fastapi.encoders").jsonable_encoder
    RequestValidationError = _serve_extra("fastapi.exceptions").RequestValidationError
    responses = _serve_extra("fastapi.responses")
    HTMLResponse, JSONResponse, Response, StreamingResponse = (responses.HTMLResponse, responses.JSONResponse,
                                                               responses.Response, responses.StreamingResponse)
    BaseModel, Field, model_validator = pydantic.BaseModel, pydantic.Field, pydantic.model_validator
    # a photo id is one of SQLite's integers: anything else is a 422, never an OverflowError (a 500)
    PhotoId = typing.Annotated[int, fastapi.Path(ge=0, le=MAX_ID, description="an indexed photo's id")]

    class SearchRequest(BaseModel):
        text: str | None = Field(None, max_length=MAX_TEXT, description="a description of the photos wanted")
        # strict: true is not 1, "5" not 5 (as the CLI's flags)
        like_id: int | None = Field(None, ge=0, le=MAX_ID, strict=True,
                                    description="id of an indexed photo: find photos like it")
        class_id: str | None = Field(None, max_length=200, description="a class's stored text vector")
        k: int = Field(10, ge=1, le=MAX_K, strict=True)
        min_score: float = Field(-1.0, ge=-1.0, le=1.0, strict=True)

        @model_validator(mode="after")
        def one_query(self):
            given = [x for x in (self.text, self.like_id, self.class_id) if x is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of text, like_id or class_id")
            if self.text is not None:
                check_texts([self.text])  # a DataError is a ValueError: a 422 like any invalid field
            return self

    class Hit(BaseModel):
        id: int
        path: str
        score: float
        thumb: str
        photo: str
        class_: str | None = Field(None, alias="class")

    class Refused(BaseModel):
        detail: str

    def refusals(**codes: str) -> dict:
        """OpenAPI entries for the errors an endpoint answers, so clients (and the fuzz) know them."""
        return {int(code[1:]): {"model": Refused, "description": text} for code, text in codes.items()}

    class SearchResponse(BaseModel):
        results: list[Hit]
        explanations: list[dict]
        took_ms: float

    batcher = Batcher(reader, max_batch, wait_ms)
    app = FastAPI(title="zscrgan search", description="Zero-shot photo search by description (ZSCRGAN)")
    app.state.batcher = batcher
    page = resources.files("zscrgan.search").joinpath("static/index.html").read_text(encoding="utf-8")
    page_headers = {"Content-Security-Policy": page_policy(page), "Referrer-Policy": "no-referrer"}
    health_body = json.dumps({"status": "ok", "photos": len(reader.index)}).encode()
    info_body = {**(reader.info() if show_paths else without_paths(reader.info())), "pid": os.getpid()}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        """FastAPI's own 422, but ASCII JSON: an input with a lone surrogate must not become a 500."""
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}).encode()
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page():
        return HTMLResponse(page, headers=page_headers)

    @app.get("/health")
    async def health():
        return Response(health_body, media_type="application/json")

    @app.get("/info")
    async def info():
        return {**info_body, "batches": batcher.batches, "queries": batcher.queries}

    @app.post("/search", response_model=SearchResponse, response_model_by_alias=True,
              responses=refusals(_400="a text this index cannot embed", _404="no such photo id or class",
                                 _408="body not received in time", _413="body over 64 KiB"))
    async def search(req: SearchRequest):
        answer = await batcher.submit(Query(req.text, req.like_id, req.class_id, req.k, req.min_score))
        if isinstance(answer, Refusal):
            return JSONResponse({"detail": answer.detail}, status_code=answer.status)
        results = [{**h, "path": shown(h["path"]), "score": round(h["score"], 4), "thumb": f"/thumb/{h['id']}",
                    "photo": f"/photo/{h['id']}"}
                   for h in answer["results"]]
        body = {"results": results, "explanations": answer["explanations"],
                "took_ms": round(answer["timing"]["total"], 2)}
        return Response(json.dumps(body).encode(), media_type="application/json",
                        headers={"Server-Timing": server_timing(answer["timing"])})

    def not_found(photo_id: int):
        return JSONResponse({"detail": f"no photo with id {photo_id}"}, status_code=404)

    # SQLite reads of one indexed row take microseconds: done on the event loop, no thread hop
    @app.get("/thumb/{photo_id}", responses={200: {"content": {"image/jpeg": {}}}, **refusals(_404="no such photo")})
    async def thumb(photo_id: PhotoId):
        data = reader.thumb(photo_id)
        if data is None:
            return not_found(photo_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/photo/{photo_id}", responses={200: {"content": {kind: {} for kind in IMAGE_TYPES.values()}},
                                             **refusals(_404="no such photo, or its file is no longer an image")})
    async def photo(photo_id: PhotoId):
        path = reader.photo_path(photo_id)
        if path is None:
            return not_found(photo_id)
        opened = open_photo(path)  # non-blocking, a regular file, an image header: what the index read
        if isinstance(opened, str):
            return JSONResponse({"detail": f"photo {photo_id}: its file is now {opened}"}, status_code=404)
        file, st, fmt = opened

        def blocks(left: int = st.st_size):  # read in the thread pool, never more than the stat said
            with file:
                while left > 0 and (block := file.read(min(left, 1 << 16))):
                    left -= len(block)
                    yield block

        return StreamingResponse(blocks(), media_type=IMAGE_TYPES[fmt], headers={"Content-Length": str(st.st_size)})

    app.add_middleware(Guard, max_body=MAX_BODY, timeout=body_timeout)
    return app


def open_app(index: str, threads: int = 0, max_batch: int = MAX_BATCH, wait_ms: float = WAIT_MS,
             body_timeout: float = BODY_TIMEOUT, text: bool = True, precision: str = "fp32", nprobe: int = 0,
             show_paths: bool = False, header_timeout: float = connections.HEADER_TIMEOUT,
             max_connections: int = connections.MAX_CONNECTIONS):
    """Open the index, set the thread counts and this process's connection limits, load the encoder
    now (not on the first user's query)."""
    connections.configure(header_timeout, max_connections)
    if threads:
        torch.set_num_threads(threads)
        try:
            require("faiss", "search", "FAISS threads").omp_set_num_threads(threads)
        except UserError:
            pass  # no faiss: the torch search path, already set above
    reader = IndexReader(index, load_model=text, nprobe=nprobe or None, precision=precision)
    if text and reader.run.text_encoder:
        try:
            reader.encode_texts(["warm up"])
        except DataError:
            pass  # no free text on this set: queries by class id and photo still work
    app = create_app(reader, max_batch, wait_ms, body_timeout, show_paths)
    gc.collect()
    gc.freeze()  # the ~500,000 objects of the model and libraries: out of every later full collection's scan
    return app


def app_from_env():
    """--workers: each uvicorn worker process builds its own app from the options in $ZSCRGAN_SERVE."""
    return open_app(**json.loads(os.environ[ENV]))


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="index folder made by zscrgan index")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and FAISS threads per worker (default: its share of the CPUs, less one "
                             "core a worker for its event loop; at least 1)")
    parser.add_argument("--batch_max", type=int, default=MAX_BATCH, help="queries answered by one model call")
    parser.add_argument("--batch_wait_ms", type=float, default=WAIT_MS,
                        help="how long a query waits for others to join its batch")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="sentence encoder: bf16 is about 3x faster on CPUs with native bfloat16")
    parser.add_argument("--nprobe", type=int, default=0, help="ivf/ivfpq cells searched a query (default: "
                        "64 for ivf, 128 for ivfpq; fewer: faster, lower recall, docs/performance.md)")
    parser.add_argument("--no_text", dest="text", action="store_false",
                        help="no model: photo and class queries only (less memory a worker, no checkpoint needed)")
    parser.add_argument("--body_timeout", type=float, default=BODY_TIMEOUT,
                        help="seconds a client has to send its request body")
    parser.add_argument("--header_timeout", type=float, default=connections.HEADER_TIMEOUT,
                        help="seconds a client has to send a request's headers")
    parser.add_argument("--max_connections", type=int, default=connections.MAX_CONNECTIONS,
                        help="open connections a worker keeps; more are answered 503 and closed")
    parser.add_argument("--show_paths", action="store_true",
                        help="/info shows the absolute paths of the checkpoint, data set and photos")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:
        raise DataError(f"--workers {args.workers}: must be in 1..64")
    if (args.batch_max < 1 or args.batch_wait_ms < 0 or min(args.body_timeout, args.header_timeout) <= 0
            or args.max_connections < 1 or min(args.threads, args.nprobe) < 0):
        raise DataError("--batch_max, --body_timeout, --header_timeout, --max_connections must be positive; "
                        "--batch_wait_ms, --threads, --nprobe at least 0")
    uvicorn = _serve_extra("uvicorn")
    options = {"index": str(args.index.resolve()), "max_batch": args.batch_max, "wait_ms": args.batch_wait_ms,
               "body_timeout": args.body_timeout, "text": args.text, "precision": args.precision, "nprobe": args.nprobe,
               "show_paths": args.show_paths, "header_timeout": args.header_timeout,
               "max_connections": args.max_connections,
               "threads": args.threads or max(1, (len(os.sched_getaffinity(0)) - args.workers) // args.workers)}
    served = dict(host=args.host, port=args.port, log_level="warning", access_log=False,
                  http="zscrgan.search.connections:GuardedProtocol")  # header deadline, connection cap
    if not is_loopback(args.host):
        print(f"zscrgan serve: warning: {args.host} is reachable from other machines and the server has no "
              f"authentication: anyone who reaches it can search and view every indexed photo", file=sys.stderr)
    if args.workers == 1:
        app = open_app(**options)
        photos = len(app.state.batcher.reader.index)
        print(f"zscrgan serve: {photos} photos from {args.index} on http://{args.host}:{args.port}/",
              file=sys.stderr, flush=True)
        uvicorn.run(app, **served)
        return 0
    IndexReader(args.index, load_model=args.text)  # a bad folder or a missing checkpoint: refused here, once
    os.environ[ENV] = json.dumps(options)
    print(f"zscrgan serve: {args.workers} workers over {args.index} on http://{args.host}:{args.port}/",
          file=sys.stderr, flush=True)
    uvicorn.run("zscrgan.search.serve:app_from_env", factory=True, workers=args.workers, **served)
    return 0
