"""`zscrgan serve`: an index folder as an HTTP API and a one-page search site (FastAPI + uvicorn).

    zscrgan serve photos_index [--host 127.0.0.1] [--port 8000]

    GET  /            the search page (static/index.html: no build step, nothing from a CDN)
    GET  /health      {"status": "ok"}
    GET  /info        the index manifest and its counts
    POST /search      {text | like_id | class_id, k, min_score} ->
                      {results: [{id, path, score, thumb, class}], explanations, took_ms}
    GET  /thumb/{id}  the JPEG thumbnail of a photo
    GET  /photo/{id}  the photo itself
    GET  /docs        OpenAPI documentation

Safety: binds 127.0.0.1 unless told otherwise; photos are addressed by integer id only, so no
client string ever becomes a file path; bodies over 64 KiB, texts over 1,000 characters and k
outside 1..1000 are refused; every error is a JSON body {"detail": ...} with a 4xx/5xx code,
never a traceback.
"""

import sys
import time
from importlib import resources
from pathlib import Path

from .errors import Parser
from .data import DataError
from .query import MAX_K, MAX_TEXT, IndexReader

MAX_BODY = 64 * 1024


def create_app(reader: IndexReader):
    """The FastAPI app over an opened index (tests build it directly, without a socket)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
        from pydantic import BaseModel, Field, model_validator
    except ImportError:
        raise DataError("zscrgan serve needs the serve extra: pip install 'zscrgan[serve]'") from None

    class SearchRequest(BaseModel):
        text: str | None = Field(None, max_length=MAX_TEXT, description="a description of the photos wanted")
        like_id: int | None = Field(None, ge=0, description="id of an indexed photo: find photos like it")
        class_id: str | None = Field(None, max_length=200, description="a class's stored text vector")
        k: int = Field(10, ge=1, le=MAX_K)
        min_score: float = Field(-1.0, ge=-1.0, le=1.0)

        @model_validator(mode="after")
        def one_query(self):
            given = [x for x in (self.text, self.like_id, self.class_id) if x is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of text, like_id or class_id")
            if self.text is not None and not self.text.strip():
                raise ValueError("text is empty: describe the photos wanted")
            return self

    class Hit(BaseModel):
        id: int
        path: str
        score: float
        thumb: str
        photo: str
        class_: str | None = Field(None, alias="class")

    class SearchResponse(BaseModel):
        results: list[Hit]
        explanations: list[dict]
        took_ms: float

    app = FastAPI(title="zscrgan search", description="Zero-shot photo search by description (ZSCRGAN)")
    page = resources.files("zscrgan").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, status_code=413)
        if length is None and request.method == "POST":
            body = await request.body()  # chunked: read, but refuse what is too large
            if len(body) > MAX_BODY:
                return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page():
        return HTMLResponse(page)

    @app.get("/health")
    def health():
        return {"status": "ok", "photos": len(reader.index)}

    @app.get("/info")
    def info():
        return reader.info()

    @app.post("/search", response_model=SearchResponse, response_model_by_alias=True)
    def search(req: SearchRequest):
        start = time.perf_counter()
        exclude = None
        if req.text is not None:
            queries = reader.embed_texts([req.text])
        elif req.like_id is not None:
            exclude = req.like_id
            try:
                queries = reader.embed_like(req.like_id)
            except DataError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=404)
        else:
            try:
                queries = reader.embed_class(req.class_id)
            except DataError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=404)
        hits = reader.search(queries, req.k, req.min_score, exclude)[0]
        results = [{**h, "thumb": f"/thumb/{h['id']}", "photo": f"/photo/{h['id']}"} for h in hits]
        return {"results": results, "explanations": reader.explain(queries)[0],
                "took_ms": round((time.perf_counter() - start) * 1000, 2)}

    def not_found(photo_id: int):
        return JSONResponse({"detail": f"no photo with id {photo_id}"}, status_code=404)

    @app.get("/thumb/{photo_id}", responses={200: {"content": {"image/jpeg": {}}}})
    def thumb(photo_id: int):
        data = reader.thumb(photo_id) if photo_id >= 0 else None
        if data is None:
            return not_found(photo_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/photo/{photo_id}")
    def photo(photo_id: int):
        path = reader.photo_path(photo_id) if photo_id >= 0 else None
        if path is None:
            return not_found(photo_id)
        return FileResponse(path)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="zscrgan serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path, help="index folder made by zscrgan index")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        raise DataError("zscrgan serve needs the serve extra: pip install 'zscrgan[serve]'") from None
    reader = IndexReader(args.index)
    if reader.run.text_encoder:  # load the sentence encoder now, not on the first user's query
        try:
            reader.embed_texts(["warm up"])
        except DataError:
            pass  # no free text on this set: queries by class id and photo still work
    app = create_app(reader)
    print(f"zscrgan serve: {len(reader.index)} photos from {args.index} on http://{args.host}:{args.port}/",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
