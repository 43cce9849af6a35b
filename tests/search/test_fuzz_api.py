"""A property-based fuzz of `zscrgan serve`'s HTTP API from its own OpenAPI schema (Schemathesis on
Hypothesis), in process over ASGI: every operation, valid and invalid inputs alike.

Checks per answer: no 5xx, a body that conforms to the schema of its status, the content type the
schema declares, a status the schema declares. Over the tiny flower index (tests/flowerkit.py), with
its model, so free texts of any Unicode reach the tokenizer. Bounded: FUZZ_EXAMPLES a operation
(ZSCRGAN_FUZZ_EXAMPLES raises it for a longer run, docs/threat_model.md).
"""
import os

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
pytest.importorskip("efficientnet_lite_pytorch")
schemathesis = pytest.importorskip("schemathesis")
from flowerkit import flower_index  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from zscrgan.search.reader import IndexReader  # noqa: E402
from zscrgan.search.serve import create_app  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("ZSCRGAN_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def api_schema():
    app = create_app(IndexReader(flower_index()), wait_ms=0)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.generation.update(modes=list(schemathesis.GenerationMode))  # valid and invalid inputs
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py); about 1 minute on 2 cores
@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_its_schema_says(case):
    from schemathesis.checks import (content_type_conformance, not_a_server_error, response_schema_conformance,
                                     status_code_conformance)

    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, content_type_conformance,
                                   status_code_conformance])
