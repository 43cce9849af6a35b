"""Micro-batching for `zscrgan serve`: one thread owns the model, and concurrent queries share its calls.

Why: a text query is a sentence-encoder call, a generator + CSEM pass and a FAISS search, each
with a fixed cost (Python, tokenizer, thread start-up) far above its cost per row. Sixteen users
answered one at a time in a thread pool also fight over the GIL and the cores. So queries go
onto a queue; the one model thread takes the first, then whatever else arrives within
``wait_ms`` (at most ``max_batch``), and answers them all with one ``encode`` call, one
generator + CSEM pass, one FAISS search and one SQLite read of the hits' metadata. While it
works the next batch queues up, so batches grow with the load by themselves. It waits only
for the company the last batch had (up to as many queries), so a lone user's query never waits
and a batch whose clients have all arrived does not wait out the window. The event loop
only puts queries on the queue and awaits a future: it never waits on the model.

Each query is checked on its own first, and a batch whose encoding fails is retried one query
at a time, so one bad query gets its own error and the others their answers.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from zscrgan.errors import DataError
from zscrgan.search.reader import IndexReader, check_texts

WAIT_MS = 2.0  # how long the first query of a batch waits for company
MAX_BATCH = 64
STAGES = ("encode", "embed", "search", "fetch")


@dataclass
class Query:
    text: str | None = None
    like_id: int | None = None
    class_id: str | None = None
    k: int = 10
    min_score: float = -1.0


@dataclass
class Refusal:
    """One query's error inside a batch: an HTTP status and a one-line reason."""
    status: int
    detail: str


class Batcher:
    """Answers :class:`Query` objects in batches on one thread; see the module docstring."""

    def __init__(self, reader: IndexReader, max_batch: int = MAX_BATCH, wait_ms: float = WAIT_MS):
        self.reader, self.max_batch, self.wait = reader, max(1, int(max_batch)), max(0.0, wait_ms) / 1000
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._last = 0  # size of the last batch
        self.batches = self.queries = 0  # served so far: the mean batch size is queries / batches
        self._thread = threading.Thread(target=self._run, name="zscrgan-model", daemon=True)
        self._thread.start()

    async def submit(self, query: Query) -> dict | Refusal:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((query, future, loop, time.perf_counter()))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take(self) -> list | None:
        first = self._queue.get()
        if first is None:
            return None
        batch, deadline, expect = [first], time.perf_counter() + self.wait, self._last
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.perf_counter()
                if len(batch) >= expect or left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                answers = self.answer([item[0] for item in batch])
            except Exception as exc:  # never let the model thread die: every caller gets a 500
                answers = [Refusal(500, f"internal error ({type(exc).__name__})")] * len(batch)
            self.batches, self.queries, self._last = self.batches + 1, self.queries + len(batch), len(batch)
            done = time.perf_counter()
            for (_, future, loop, queued), answer in zip(batch, answers):
                if isinstance(answer, dict):
                    answer["timing"]["total"] = (done - queued) * 1000
                loop.call_soon_threadsafe(_settle, future, answer)

    # ---- one batch, synchronously (the model thread; tests call it directly) ----------------
    def answer(self, queries: list[Query]) -> list[dict | Refusal]:
        """Per query: {results, explanations, timing} with unrounded scores, or a Refusal."""
        timing = dict.fromkeys(STAGES, 0.0)
        out: list = [None] * len(queries)
        vectors: dict[int, np.ndarray] = {}
        texts = [i for i, q in enumerate(queries) if q.text is not None]
        for i in texts:
            try:
                check_texts([queries[i].text])
            except DataError as exc:
                out[i] = Refusal(422, str(exc))
        texts = [i for i in texts if out[i] is None]
        if texts:
            self._encode_texts(queries, texts, vectors, out, timing)
        start = time.perf_counter()
        likes = [i for i, q in enumerate(queries) if q.like_id is not None]
        stored = self.reader.embeddings_of(queries[i].like_id for i in likes) if likes else {}
        for i in likes:
            if queries[i].like_id in stored:
                vectors[i] = stored[queries[i].like_id][None]
            else:
                out[i] = Refusal(404, f"photo id {queries[i].like_id}: not in this index")
        for i, q in enumerate(queries):
            if q.class_id is not None:
                try:
                    vectors[i] = self.reader.embed_class(q.class_id)
                except DataError as exc:
                    out[i] = Refusal(404, str(exc))
        timing["embed"] += (time.perf_counter() - start) * 1000
        if vectors:
            self._search(queries, vectors, out, timing)
        return out

    def _encode_texts(self, queries, texts, vectors, out, timing) -> None:
        """One encoder call and one generator + CSEM pass for all texts; one at a time if that fails."""
        try:
            run = self.reader.text_run()
        except DataError as exc:
            for i in texts:
                out[i] = Refusal(400, str(exc))
            return
        try:
            start = time.perf_counter()
            sentences = run.sentence_vectors([queries[i].text for i in texts], self.reader.precision)
            middle = time.perf_counter()
            embedded = run.embed_text_vectors(sentences)
            timing["encode"] += (middle - start) * 1000
            timing["embed"] += (time.perf_counter() - middle) * 1000
        except Exception as exc:
            if len(texts) == 1:  # this text's own error (the encoder is deterministic: no retry)
                out[texts[0]] = (Refusal(400, str(exc)) if isinstance(exc, DataError)
                                 else Refusal(500, f"internal error ({type(exc).__name__})"))
                return
            for i in texts:  # find the one that failed: each text on its own
                self._encode_texts(queries, [i], vectors, out, timing)
            return
        for row, i in enumerate(texts):
            vectors[i] = embedded[row][None]

    def _search(self, queries, vectors, out, timing) -> None:
        """One FAISS search of every query's vector, then the hits' metadata in one read."""
        order = sorted(vectors)
        reader = self.reader
        excludes = [queries[i].like_id for i in order]
        want = min(max(queries[i].k + (e is not None) for i, e in zip(order, excludes)), len(reader.index))
        matrix = np.concatenate([vectors[i] for i in order]).astype(np.float32)
        start = time.perf_counter()
        scores, rows = reader.index.search(matrix, want)
        middle = time.perf_counter()
        hits = reader.hits(scores, rows, [queries[i].k for i in order], [queries[i].min_score for i in order],
                           excludes)
        explained = reader.explain(matrix)
        timing["search"] += (middle - start) * 1000
        timing["fetch"] += (time.perf_counter() - middle) * 1000
        for i, found, why in zip(order, hits, explained):
            out[i] = {"results": found, "explanations": why, "timing": dict(timing)}


def _settle(future: asyncio.Future, answer) -> None:
    if not future.done():  # the caller may have gone (client disconnected, request cancelled)
        future.set_result(answer)


__all__ = ["Batcher", "Query", "Refusal", "MAX_BATCH", "WAIT_MS"]
