"""The HTTP endpoint end to end: a real ``mediafarm serve`` process, real Dask, clamd and S3.

Files go up over HTTP, each asset is polled to a terminal status, and every
rendition URL the API hands out is fetched and decoded: once with local stores
(URLs served by the app itself) and once with the buffer, originals and
renditions stores on a moto S3 endpoint (presigned URLs, presigned PUT uploads).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pyvips
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from catalog import Catalog, upgrade
from cluster.http.app import create_app
from cluster.cli.samples import EICAR, scene
from cluster.http.service import load_api_config
from cluster.http.upload_store import owner_area
from tests.conftest import make_settings, s3_store
from tests.services.api_server import (Deployment, assert_error, sqlite_deployment,
                                       start_api_server, wait_terminal)
from tests.services.postgres import scratch_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PRESETS = {"large", "medium", "small", "thumb"}
S3_MAX_UPLOAD = 2 * 1024 * 1024


def _jpeg(seed: int, width: int = 640, height: int = 480) -> bytes:
    return scene(width, height, seed).jpegsave_buffer(Q=85)


@pytest.fixture(scope="module")
def http() -> httpx.Client:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def local(tmp_path_factory, clamd, dask_client) -> Deployment:
    """Local stores, SQLite catalog, the suite's Dask cluster."""
    with sqlite_deployment(tmp_path_factory.mktemp("http-local"), clamd.url,
                           dask_client.scheduler.address,
                           {"MEDIAFARM_API_RATE_LIMIT": "1000",
                            "MEDIAFARM_API_RATE_BURST": "1000"}) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory, clamd, pg_server, s3_endpoint) -> Deployment:
    """Buffer, originals and renditions on moto S3; PostgreSQL; the server's own LocalCluster.

    Workers open the buffered sources by URL with plain fsspec, so they get the
    endpoint through FSSPEC_S3, as a deployment on a non-AWS endpoint must.
    """
    root = tmp_path_factory.mktemp("http-s3")
    stores = {name: s3_store(s3_endpoint, name) for name in ("buffer", "originals", "renditions")}
    fsspec_s3 = {k: v for k, v in stores["buffer"].options.items() if k != "skip_instance_cache"}
    with scratch_database(pg_server) as catalog_url:
        upgrade(catalog_url)
        settings = make_settings(root / "data", catalog_url, clamd.url, stores)
        server = start_api_server(settings, root, workers=1, extra_env={
            "FSSPEC_S3": json.dumps(fsspec_s3), "MEDIAFARM_PURGE_ORIGINALS_ON_DELETE": "1",
            "MEDIAFARM_API_URL_EXPIRES": "600", "MEDIAFARM_API_MAX_UPLOAD_BYTES": str(S3_MAX_UPLOAD),
            "MEDIAFARM_API_INGEST_PREFIX": stores["buffer"].url + "/ingest/{owner}/"})
        yield Deployment(server, settings)
        server.stop()


def _upload(http: httpx.Client, deployment: Deployment, headers: dict, data: bytes,
            name: str = "photo.jpg", content_type: str = "image/jpeg",
            extra_headers: dict | None = None) -> httpx.Response:
    return http.post(f"{deployment.url}/v1/assets", headers={**headers, **(extra_headers or {})},
                     files={"file": (name, data, content_type)})


def _check_renditions(http: httpx.Client, asset: dict, headers: dict | None) -> None:
    assert asset["status"] == "ready", asset
    assert {r["preset"] for r in asset["renditions"]} == PRESETS
    for rendition in asset["renditions"]:
        response = http.get(rendition["url"], headers=headers or {})
        assert response.status_code == 200, (rendition["url"], response.text[:200])
        assert len(response.content) == rendition["bytes"]
        image = pyvips.Image.new_from_buffer(response.content, "")
        assert (image.width, image.height) == (rendition["width"], rendition["height"])


# -- local stores -----------------------------------------------------------------------------


def test_upload_poll_and_fetch_every_rendition_from_the_app(http, local):
    alice = local.token("alice")
    answers = [_upload(http, local, alice, _jpeg(seed), f"photo-{seed}.jpg") for seed in (1, 2)]
    assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
    for answer in answers:
        body = answer.json()
        assert set(body) == {"id", "status_url"}
        asset = wait_terminal(http, body["status_url"], alice)
        _check_renditions(http, asset, alice)
        assert all(r["url"].startswith(f"{local.url}/v1/renditions/") and "&sig=" in r["url"]
                   and r["url_expires_at"] for r in asset["renditions"])
        assert [v["version"] for v in asset["versions"]] == [1]
        # The upload was buffered content-addressed in alice's own area, then taken in.
        assert owner_area(local.store("buffer"), "alice").exists(asset["sha256"])
        thumb = next(r for r in asset["renditions"] if r["preset"] == "thumb")
        fetched = http.get(thumb["url"], headers=alice)
        assert fetched.headers["content-type"] == "image/webp"
        assert http.get(thumb["url"]).status_code == 200  # signed: no token needed
        assert http.get(thumb["url"].split("?")[0]).status_code == 401  # unsigned: the token


def test_retry_with_the_same_idempotency_key_gets_the_same_answer(http, local):
    bob = local.token("bob")
    photo = _jpeg(7)
    first = _upload(http, local, bob, photo, extra_headers={"Idempotency-Key": "upload-7"})
    again = _upload(http, local, bob, photo, "renamed.jpg",
                    extra_headers={"Idempotency-Key": "upload-7"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    other = _upload(http, local, bob, _jpeg(8), extra_headers={"Idempotency-Key": "upload-7"})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_key_reused"
    asset = wait_terminal(http, first.json()["status_url"], bob)
    assert asset["status"] == "ready"
    record = Catalog(local.settings.catalog_url).assets([asset["id"]])[asset["id"]]
    assert record["attempt"] == 1  # the retry submitted nothing
    # Keys belong to their owner: another owner's same key is a new request.
    carol = local.token("carol")
    theirs = _upload(http, local, carol, photo, extra_headers={"Idempotency-Key": "upload-7"})
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_eicar_upload_ends_rejected_infected(http, local):
    dave = local.token("dave")
    answer = _upload(http, local, dave, EICAR, "invoice.jpg")
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], dave)
    assert (asset["status"], asset["reason"]) == ("rejected", "infected")
    assert "Eicar" in asset["message"] and asset["renditions"] == []


def test_delete_unpublishes_renditions_and_keeps_status_and_original(http, local):
    erin = local.token("erin")
    answer = _upload(http, local, erin, _jpeg(11))
    asset = wait_terminal(http, answer.json()["status_url"], erin)
    thumb = next(r for r in asset["renditions"] if r["preset"] == "thumb")
    assert http.delete(answer.json()["status_url"], headers=erin).status_code == 204
    after = http.get(answer.json()["status_url"], headers=erin).json()
    assert after["status"] == "ready" and after["deleted_at"] and after["renditions"] == []
    assert http.get(thumb["url"], headers=erin).status_code == 404
    assert local.store("originals").exists(asset["sha256"])  # kept by default
    assert http.delete(answer.json()["status_url"], headers=erin).status_code == 204
    # Sending the same bytes again brings the asset back.
    again = _upload(http, local, erin, _jpeg(11))
    assert again.json()["id"] == asset["id"]
    restored = wait_terminal(http, again.json()["status_url"], erin)
    assert restored["deleted_at"] is None and len(restored["renditions"]) == 4


def test_an_admin_erases_an_owner_and_what_only_they_stored(http, local):
    frank = local.token("frank")
    answer = _upload(http, local, frank, _jpeg(51))
    asset = wait_terminal(http, answer.json()["status_url"], frank)
    thumb = next(r for r in asset["renditions"] if r["preset"] == "thumb")
    assert http.delete(f"{local.url}/v1/owners/frank", headers=frank).status_code == 403
    admin = local.token("root", "submit,read,admin")
    erased = http.delete(f"{local.url}/v1/owners/frank", headers=admin)
    assert erased.status_code == 200, erased.text
    counts = erased.json()["counts"]
    assert counts["assets"] == 1 and counts["api_tokens"] == 1 and counts["gc_blobs"] >= 2
    assert http.get(answer.json()["status_url"], headers=frank).status_code == 401
    assert http.get(thumb["url"]).status_code == 404  # the signed URL
    assert not local.store("originals").exists(asset["sha256"])
    assert not local.store("renditions").exists(thumb["sha256"] if "sha256" in thumb
                                                else thumb["url"].split("?")[0].rsplit("/", 1)[1])


def test_presigned_uploads_need_an_object_store(http, local):
    answer = http.post(f"{local.url}/v1/uploads", headers=local.token("fred"))
    assert answer.status_code == 409
    assert "S3 or R2" in answer.json()["message"]


def test_reencode_job_runs_in_the_background(http, local):
    gina = local.token("gina", "submit,read,admin")
    asset = wait_terminal(http, _upload(http, local, gina, _jpeg(21)).json()["status_url"], gina)
    recipe = {"name": "tiny", "presets": [{"name": "tiny", "width": 64, "format": "webp"}]}
    started = http.post(f"{local.url}/v1/jobs", headers=gina,
                        json={"kind": "reencode", "where": "owner=gina", "recipe": recipe})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 60
    while (job := http.get(started.json()["status_url"], headers=gina).json())["status"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "finished" and job["kind"] == "reencode", job
    assert job["assets"] == {"ready": 1} and job["submitted"] == 1
    renditions = http.get(f"{local.url}/v1/assets/{asset['id']}", headers=gina).json()["renditions"]
    assert [(r["preset"], r["width"]) for r in renditions] == [("tiny", 64)]


def test_health_and_readiness(http, local):
    assert http.get(f"{local.url}/healthz").json() == {"status": "ok"}
    ready = http.get(f"{local.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready",
                            "checks": {"catalog": "ok", "scheduler": "ok", "clamd": "ok"}}
    # `serve` logs each request at its default level, as an operator expects of a server.
    assert '"GET /healthz HTTP/1.1" 200' in local.server.log()


def test_metrics_need_an_admin_token_and_count_the_endpoints_work(http, local):
    """/metrics is the operator's: 401 without a token, 403 without admin; with admin, the
    endpoint's own gauges, settled once an upload has been taken in and has ended."""
    assert_error(http.get(f"{local.url}/metrics"), 401, "unauthorized")
    assert_error(http.get(f"{local.url}/metrics", headers=local.token("bob")), 403, "forbidden")
    alice = local.token("alice")
    created = _upload(http, local, alice, _jpeg(41)).json()
    assert wait_terminal(http, created["status_url"], alice)["status"] == "ready"
    answer = http.get(f"{local.url}/metrics", headers=local.token("ops", "admin"))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert families["mediafarm_submit_queue_depth"].samples[0].value == 0
    assert families["mediafarm_assets_in_flight"].type == "gauge"
    # The workers' metrics are declared here too; their samples are on the workers' /metrics.
    assert {"mediafarm_stage_duration_seconds", "mediafarm_outcomes", "mediafarm_scanner_errors",
            "mediafarm_store_errors", "mediafarm_store_retries"} <= set(families)


# -- the OpenAPI document, fuzzed -------------------------------------------------------------

# Generated by FastAPI from the routes and models; the app is not started to make it.
SERVED_DOCUMENT = create_app(lambda: None,
                             load_api_config(make_settings(Path("/x"), "", ""), {})).openapi()
# tus bodies are raw bytes of their own media type: sent as octet-streams are.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
# (operation, whether it takes input that can be made invalid); the document itself is not fuzzed.
OPERATIONS = [(f"{method.upper()} {path}",
               bool(spec.get("requestBody") or spec.get("parameters") or item.get("parameters")))
              for path, item in SERVED_DOCUMENT["paths"].items() if path != "/openapi.json"
              for method, spec in item.items() if method != "parameters"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# Values the generated cases rarely reach on their own, put into some of them: lone surrogates,
# NUL and deep brackets in JSON strings and the Idempotency-Key, odd bytes in path parameters.
HOSTILE_TEXT = ["\ud800", "x\udfff", "\x00", "\u2028\ufffe", "[" * 5000]
# Where a field only reaches deeper code in a certain form, the hostile text goes inside one.
HOSTILE_FORMS = {"source_uri": "{buffer}/{text}.jpg", "where": "owner={text}",
                 "manifest": "catalog:owner={text}"}
HOSTILE_PATH = ["%ED%A0%80", "%FF%FE", "%00", "..%2F..%2Fetc"]


def _hostile(case, text: str | None, path_text: str | None, buffer: str):
    """``case`` with hostile values put in; a new case, so schemathesis sends it as it is."""
    if text is None and path_text is None:
        return case
    body, headers = case.body, dict(case.headers or {})
    if text is not None:
        if isinstance(body, dict) and case.media_type == "application/json":
            body = {key: HOSTILE_FORMS.get(key, "{text}").format(buffer=buffer, text=text)
                    if isinstance(value, str) else value
                    for key, value in body.items()} or {"source_uri": f"{buffer}/{text}"}
        raw = text.encode("utf-8", "surrogatepass").decode("latin-1")  # the bytes a client may send
        if "Idempotency-Key" in headers and all(c >= " " and c != "\x7f" for c in raw):
            headers["Idempotency-Key"] = raw
    path = {name: path_text for name in case.path_parameters or {}} if path_text else None
    return case.operation.Case(method=case.method, path_parameters=path or case.path_parameters,
                               headers=headers, query=case.query, body=body,
                               media_type=case.media_type)


def test_the_served_document_is_the_generated_one(http, local):
    served = http.get(f"{local.url}/openapi.json").json()
    assert served["openapi"].startswith("3.") and served["paths"] == SERVED_DOCUMENT["paths"]
    docs = http.get(f"{local.url}/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text  # the interactive docs


@pytest.fixture(scope="module")
def live_schema(local):
    """The document as the live server serves it, not as this test imports it."""
    return schemathesis.openapi.from_url(f"{local.url}/openapi.json")


@pytest.mark.parametrize(("label", "has_input"), OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_every_operation_conforms_to_its_openapi_document(label, has_input, local, live_schema):
    """No 5xx, and every status, content type and body as documented, for valid and invalid input."""
    operation = next(result.ok() for result in live_schema.get_all_operations()
                     if result.ok().label == label)
    admin = local.token("schemathesis", "submit,read,admin")
    modes = [(GenerationMode.POSITIVE, 30)] + ([(GenerationMode.NEGATIVE, 10)] if has_input else [])
    for mode, examples in modes:

        @given(case=st.tuples(operation.as_strategy(generation_mode=mode),
                              st.none() | st.sampled_from(HOSTILE_TEXT),
                              st.none() | st.sampled_from(HOSTILE_PATH))
                    .map(lambda t: _hostile(*t, buffer=local.store("buffer").url)))
        @settings(max_examples=examples, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def call(case) -> None:
            case.call_and_validate(base_url=local.url, headers=admin, checks=CHECKS)

        call()


# -- S3 stores (moto) -------------------------------------------------------------------------


def test_upload_poll_and_fetch_presigned_renditions_on_s3(http, on_s3):
    alice = on_s3.token("alice")
    answer = _upload(http, on_s3, alice, _jpeg(31))
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], alice, timeout=120)
    _check_renditions(http, asset, headers=None)  # presigned: no token needed
    for rendition in asset["renditions"]:
        assert "X-Amz-Signature=" in urlsplit(rendition["url"]).query
        assert rendition["url_expires_at"]
    assert owner_area(on_s3.store("buffer"), "alice").exists(asset["sha256"])
    assert on_s3.store("originals").exists(asset["sha256"])
    # Deleting purges the original here (MEDIAFARM_PURGE_ORIGINALS_ON_DELETE=1).
    assert http.delete(answer.json()["status_url"], headers=alice).status_code == 204
    assert not on_s3.store("originals").exists(asset["sha256"])


def test_presigned_put_upload_end_to_end_on_s3(http, on_s3):
    bob = on_s3.token("bob")
    photo = _jpeg(32)
    made = http.post(f"{on_s3.url}/v1/uploads", headers=bob,
                     json={"content_type": "image/jpeg", "size": len(photo)})
    assert made.status_code == 201, made.text
    upload = made.json()
    assert upload["method"] == "PUT" and "X-Amz-Signature=" in upload["upload_url"]
    early = http.post(upload["complete_url"], headers=bob)
    assert early.status_code == 409 and early.json()["error"] == "not_uploaded"
    put = http.put(upload["upload_url"], content=photo, headers=upload["headers"])
    assert put.status_code == 200, put.text
    done = http.post(upload["complete_url"], headers=bob)
    assert done.status_code == 202, done.text
    asset = wait_terminal(http, done.json()["status_url"], bob, timeout=120)
    _check_renditions(http, asset, headers=None)
    assert http.post(upload["complete_url"], headers=bob).json() == done.json()
    # Another owner cannot complete or see it.
    eve = on_s3.token("eve")
    assert http.post(upload["complete_url"], headers=eve).status_code == 404
    assert http.get(done.json()["status_url"], headers=eve).status_code == 404


def test_a_forged_host_header_does_not_reach_the_complete_url(http, on_s3):
    made = http.post(f"{on_s3.url}/v1/uploads", json={"content_type": "image/jpeg", "size": 1000},
                     headers={**on_s3.token("hal"), "Host": "evil.example"})
    assert made.status_code == 201, made.text
    assert made.json()["complete_url"].startswith(f"{on_s3.url}/v1/uploads/")  # the bound address


def test_json_source_in_the_owners_ingest_prefix_is_taken_in(http, on_s3):
    carol = on_s3.token("carol")
    photo = _jpeg(33)
    buffer = on_s3.store("buffer")
    buffer.put_at("ingest/carol/carol.jpg", photo)
    answer = http.post(f"{on_s3.url}/v1/assets", headers=carol,
                       json={"source_uri": f"{buffer.url}/ingest/carol/carol.jpg"})
    assert answer.status_code == 202, answer.text
    asset = wait_terminal(http, answer.json()["status_url"], carol, timeout=120)
    _check_renditions(http, asset, headers=None)
    missing = http.post(f"{on_s3.url}/v1/assets", headers=carol,
                        json={"source_uri": f"{buffer.url}/ingest/carol/absent.jpg"})
    assert missing.status_code == 422 and missing.json()["error"] == "source_missing"


def _presign(http: httpx.Client, deployment: Deployment, headers: dict, size: int) -> dict:
    made = http.post(f"{deployment.url}/v1/uploads", headers=headers,
                     json={"content_type": "image/jpeg", "size": size})
    assert made.status_code == 201, made.text
    return made.json()


def _put_and_complete(http: httpx.Client, deployment: Deployment, headers: dict,
                      data: bytes) -> tuple[dict, dict]:
    """A presigned upload of ``data`` completed; (the upload, the accepted answer)."""
    upload = _presign(http, deployment, headers, len(data))
    put = http.put(upload["upload_url"], content=data, headers=upload["headers"])
    assert put.status_code == 200, put.text
    done = http.post(upload["complete_url"], headers=headers)
    assert done.status_code == 202, done.text
    return upload, done.json()


def _buffer_objects(deployment: Deployment) -> set[str]:
    buffer = deployment.store("buffer")
    return {buffer.fs.unstrip_protocol(p) for p in buffer.fs.find(buffer.root)}


def test_source_uri_cannot_name_another_owners_objects_on_s3(http, on_s3):
    alice = on_s3.token("alice-s3")
    upload, done = _put_and_complete(http, on_s3, alice, _jpeg(34))
    asset = wait_terminal(http, done["status_url"], alice, timeout=120)
    assert asset["status"] == "ready"
    sent = _upload(http, on_s3, alice, _jpeg(35))
    assert sent.status_code == 202, sent.text
    buffer, originals = on_s3.store("buffer"), on_s3.store("originals")
    buffer.put_at("ingest/alice-s3/a.jpg", _jpeg(34))
    theirs = [f"{buffer.url}/uploads/{upload['id']}",       # alice's presigned upload key
              f"{buffer.url}/uploads/{uuid.uuid4()}",        # nobody's
              originals.url_for(asset["sha256"]), originals.url_for("0" * 64),
              f"{buffer.url}/ingest/alice-s3/a.jpg",
              *sorted(_buffer_objects(on_s3))]               # whatever the server keeps of hers
    answers = [http.post(f"{on_s3.url}/v1/assets", headers=on_s3.token("bob-s3"),
                         json={"source_uri": uri}) for uri in theirs]
    assert {(a.status_code, a.text) for a in answers} == {(answers[1].status_code, answers[1].text)}
    assert answers[1].status_code == 422 and answers[1].json()["error"] == "source_not_allowed"
    assert on_s3.asset_count("bob-s3") == 0


def test_a_presigned_url_is_bound_to_the_announced_size(http, on_s3):
    frank = on_s3.token("frank")
    upload = _presign(http, on_s3, frank, 1000)
    signed = parse_qs(urlsplit(upload["upload_url"]).query)["X-Amz-SignedHeaders"][0]
    assert "content-length" in signed.split(";")  # S3 and R2 answer 403 to any other length
    assert upload["headers"]["Content-Length"] == "1000"
    # moto does not check signatures, so it stores what S3 would refuse: the farm must too.
    big = os.urandom(S3_MAX_UPLOAD + 1024)
    put = http.put(upload["upload_url"], content=big, headers={"Content-Type": "image/jpeg"})
    assert put.status_code == 200, put.text
    for _ in range(2):  # refused, and refused the same way again
        done = http.post(upload["complete_url"], headers=frank)
        assert done.status_code == 413 and done.json()["error"] == "too_large", done.text
    assert not any(upload["id"] in path for path in _buffer_objects(on_s3))  # deleted
    assert on_s3.asset_count("frank") == 0
    # Over the announced size but under the server's limit: refused as well.
    upload = _presign(http, on_s3, frank, 1000)
    put = http.put(upload["upload_url"], content=_jpeg(38), headers={"Content-Type": "image/jpeg"})
    assert put.status_code == 200
    done = http.post(upload["complete_url"], headers=frank)
    assert done.status_code == 413, done.text
    assert not any(upload["id"] in path for path in _buffer_objects(on_s3))


def test_a_completed_upload_cannot_be_changed_through_its_url(http, on_s3):
    gail = on_s3.token("gail")
    photo = _jpeg(36)
    upload, done = _put_and_complete(http, on_s3, gail, photo)
    asset = wait_terminal(http, done["status_url"], gail, timeout=120)
    assert asset["sha256"] == hashlib.sha256(photo).hexdigest()
    # The URL works until it expires (nothing can revoke it), but what it writes now is never
    # read, and is removed when the client completes again.
    put = http.put(upload["upload_url"], content=_jpeg(37), headers={"Content-Type": "image/jpeg"})
    assert put.status_code == 200
    again = http.post(upload["complete_url"], headers=gail)
    assert again.status_code == 202 and again.json() == done
    source = Catalog(on_s3.settings.catalog_url).assets([done["id"]])[done["id"]]["source_uri"]
    buffer = on_s3.store("buffer")
    assert buffer.fs.cat_file(source) == photo
    assert not buffer.fs.exists(buffer.key_at(f"uploads/{upload['id']}"))
    resent = http.post(f"{on_s3.url}/v1/assets", headers=gail, json={"source_uri": source})
    assert resent.status_code == 202 and resent.json()["id"] == done["id"]  # hers to name
