"""Interop with the Node service's Mongoose model of ``task_trackers`` (deploy/mongoose), both
ways, on Mongoose 8 and 9, without a MongoDB server: Node hydrates, validates and saves real
Python documents against a collection that records the driver calls, and Python reads what the
Node service inserts. Also runs the Node tests (``node --test deploy/mongoose/test/``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

import tracker
from tracker import TaskStatus, TaskTracker
from tracker.models import INDEXES

ROOT = Path(__file__).resolve().parent.parent
MONGOOSE_DIR = ROOT / "deploy" / "mongoose"
VERSIONS = ("mongoose8", "mongoose9")
QUEUE = "interop"
JSON_OPTIONS = json_util.RELAXED_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)
# isStuck()/is_stuck() thresholds, far from the ages of the documents (seconds and 20 minutes)
STUCK_TIMEOUTS_MS = (60_000, 10 * 60_000, 60 * 60_000)
ACTIVE = {"queued", "processing"}
# The fields a save() may $unset: exactly those Python's own transitions unset when leaving
# the active states.
UNSET_ON_LEAVING = ("activeKey", "leaseExpiresAt")


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """deploy/mongoose's packages (Mongoose 8 and 9), installed with `npm ci` when missing or
    older than package-lock.json. Without Node: skipped on a developer machine, failed in CI."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _fail_or_skip("node and npm are needed for the Mongoose interop tests (Node >= 20.19)")
    modules = MONGOOSE_DIR / "node_modules"
    stamp = modules / ".package-lock.json"  # npm rewrites it on every install
    lock = MONGOOSE_DIR / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        installed = subprocess.run(
            [str(npm), "ci", "--no-audit", "--no-fund"],
            cwd=MONGOOSE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if installed.returncode != 0:
            pytest.fail(f"npm ci failed in {MONGOOSE_DIR}:\n{installed.stdout}\n{installed.stderr}")
    return modules


def run_interop(directory: Path, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs deploy/mongoose/test/interop.js on ``documents`` and returns its output, parsed
    from Extended JSON (dates, ObjectIds and binaries come back typed)."""
    source = directory / "python-documents.json"
    source.write_text(
        json_util.dumps(
            {"documents": documents, "stuckTimeoutsMs": list(STUCK_TIMEOUTS_MS)},
            json_options=json_util.RELAXED_JSON_OPTIONS,
        )
    )
    result = subprocess.run(
        ["node", "test/interop.js", str(source)],
        cwd=MONGOOSE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json_util.loads(result.stdout, json_options=JSON_OPTIONS)
    return output


def _task(name: str) -> str:
    return f"{QUEUE}:{name}:{uuid.uuid4().hex[:8]}"


async def _claimed(name: str, **create: Any) -> tuple[str, str]:
    created = await tracker.create_execution(_task(name), QUEUE, {"n": 1}, **create)
    execution_id = created.execution.execution_id
    won = await tracker.claim(execution_id, worker="py-worker", lease=60, timeout=120)
    assert won.token is not None
    return execution_id, won.token


async def build_python_documents() -> list[dict[str, Any]]:
    """Executions in every status, written by the tracker's own code, carrying every field the
    Python side stores (and one no schema knows), as stored."""
    collection = TaskTracker.get_pymongo_collection()
    now = datetime.now(UTC)
    await tracker.create_execution(
        _task("queued"),
        QUEUE,
        {"n": 1, "items": [1, 2, 3], "nested": {"a": None, "b": "é"}},
        metadata={"source": "python"},
    )
    await tracker.create_execution(
        _task("retry"),
        QUEUE,
        {"n": 2},
        retry_count=5,
        fields={
            "sourceExecutionId": str(uuid.uuid4()),
            "republishedAt": now,
            "publishUnconfirmedAt": now,
            "futureField": {"kept": True},
        },
    )
    await _claimed("processing")
    stuck, _ = await _claimed("stuck")
    await collection.update_one(
        {"executionId": stuck}, {"$set": {"processingStartedAt": now - timedelta(minutes=20)}}
    )
    await tracker.create_execution(
        _task("arrival"),
        QUEUE,
        {"n": 3},
        status=TaskStatus.PROCESSING,
        history_message="tracked on arrival",
        fields={
            "processingStartedAt": now,
            "claimToken": str(uuid.uuid4()),
            "claimedBy": "py-worker",
            "leaseExpiresAt": now + timedelta(seconds=60),
            "timeoutSeconds": 30,
            "timeoutAt": now + timedelta(seconds=30),
        },
    )
    done, token = await _claimed("completed")
    await tracker.transition(
        done, TaskStatus.COMPLETED, claim_token=token, fields={"result": {"rows": 3}}
    )
    failed, token = await _claimed("failed", retry_count=2, max_retries=2)
    await tracker.transition(
        failed,
        TaskStatus.FAILED,
        claim_token=token,
        fields={
            "errorMessage": "timed out",
            "errorCategory": "transient",
            "errorStack": "Traceback (most recent call last): ...",
            "errorType": "TimeoutError",
            "nextExecutionId": str(uuid.uuid4()),
        },
    )
    retryable, token = await _claimed("retryable", retry_count=1, max_retries=3)
    await tracker.transition(retryable, TaskStatus.FAILED, claim_token=token)
    dead, token = await _claimed("dlq")
    await tracker.transition(
        dead,
        TaskStatus.DLQ,
        claim_token=token,
        fields={"errorCategory": "validation", "errorType": "InvalidMessage", "groupId": "g-1"},
    )
    archived, token = await _claimed("archived")
    await tracker.transition(archived, TaskStatus.DLQ, claim_token=token)
    await tracker.transition(
        archived,
        TaskStatus.ARCHIVED,
        fields={
            "archivedBy": "operator",
            "archivedReason": "Manual retry initiated",
            "expiresAt": now + timedelta(days=30),
        },
    )
    await tracker.create_execution(
        _task("rejected"),
        QUEUE,
        None,
        status=TaskStatus.DLQ,
        history_message="rejected on arrival",
        fields={
            "rawBody": b"\x00\xffnot json",
            "claimedExecutionId": str(uuid.uuid4()),
            "errorCategory": "validation",
            "errorMessage": "not JSON",
        },
    )
    documents = await collection.find({"queueName": QUEUE}).to_list(None)
    assert {doc["status"] for doc in documents} == {status.value for status in TaskStatus}
    return documents


@pytest.fixture
async def python_to_node(
    store: str, node_modules: Path, tmp_path: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Real Python documents and what both Mongoose versions made of them."""
    documents = await build_python_documents()
    return documents, run_interop(tmp_path, documents)


@pytest.fixture(scope="session")
def node_output(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What interop.js prints with no Python documents: Node's documents and index specs."""
    return run_interop(tmp_path_factory.mktemp("interop"), [])


def _by_execution(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {result["executionId"]: result for result in results}


def _expected_set(document: dict[str, Any], edit: str) -> set[str]:
    if edit == "status -> completed":
        return {"status", "updatedAt", "completedAt"}
    if edit == "status -> archived":
        return {"status", "updatedAt", "archivedBy"} | (
            set() if "archivedAt" in document else {"archivedAt"}
        )
    assert edit == "metadata edit"
    return {"metadata", "updatedAt"}


def _expected_edit(document: dict[str, Any]) -> str:
    if document["status"] in ACTIVE:
        return "status -> completed"
    return "metadata edit" if document["status"] == "archived" else "status -> archived"


async def test_python_documents_validate_in_mongoose(
    python_to_node: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    # Given real Python documents in every status, hydrated by Mongoose 8 and 9
    documents, output = python_to_node
    for version in VERSIONS:
        results = _by_execution(output["python"][version])
        assert set(results) == {doc["executionId"] for doc in documents}
        for document in documents:
            result = results[document["executionId"]]
            # Then validateSync() and validate() find nothing wrong, and no field is lost
            assert result["validationErrors"] == [], (version, document["status"], result)
            assert result["asyncValidationErrors"] == [], (version, document["status"], result)
            assert result["missingKeys"] == [], (version, document["status"], result)


async def test_can_retry_and_is_stuck_agree_with_python(
    python_to_node: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    # Given the same documents on both sides
    documents, output = python_to_node
    stuck_somewhere = False
    for document in documents:
        model = TaskTracker.model_validate(document)
        for version in VERSIONS:
            result = _by_execution(output["python"][version])[document["executionId"]]
            # Then the Mongoose schema's methods answer as Python's do
            assert result["canRetry"] is model.can_retry(), (version, document)
            assert result["isStuckDefault"] is model.is_stuck(), (version, document)
            for ms in STUCK_TIMEOUTS_MS:
                assert result["isStuck"][str(ms)] is model.is_stuck(ms / 1000), (version, ms)
                stuck_somewhere |= result["isStuck"][str(ms)]
    # and the cases are not all alike
    assert stuck_somewhere
    assert {TaskTracker.model_validate(doc).can_retry() for doc in documents} == {True, False}


async def test_mongoose_save_keeps_python_fields_and_unsets_active_key(
    python_to_node: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    # Given each Python document edited and saved by Mongoose (active -> completed,
    # finished -> archived, archived -> a metadata change)
    documents, output = python_to_node
    database = TaskTracker.get_pymongo_collection().database
    for version in VERSIONS:
        copy = database[f"task_trackers_{version}"]
        results = _by_execution(output["python"][version])
        for document in documents:
            result = results[document["executionId"]]
            edit = _expected_edit(document)
            assert result["edit"] == edit
            assert "saveError" not in result, result["saveError"]
            # Then one updateOne, fenced on the loaded status and claim for a status change
            assert result["saveCalls"] == ["updateOne"]
            fence: dict[str, Any] = {"_id": document["_id"]}
            if edit != "metadata edit":
                fence["status"] = document["status"]
                fence["claimToken"] = document.get("claimToken", {"$exists": False})
            assert result["filter"] == fence
            # and only $set of what changed, $unset of activeKey and the lease when leaving
            # the active states, a $push of one history entry
            update = result["update"]
            assert set(update) <= {"$set", "$unset", "$push"}
            assert set(update["$set"]) == _expected_set(document, edit), (version, document)
            leaving = document["status"] in ACTIVE
            expected_unset = {k for k in UNSET_ON_LEAVING if k in document} if leaving else set()
            assert set(update.get("$unset", {})) == expected_unset
            if leaving:
                assert "activeKey" in update["$unset"]
            if edit == "metadata edit":
                assert "$push" not in update
            else:
                (entry,) = update["$push"]["history"]["$each"]
                assert entry["status"] == update["$set"]["status"]

            # When that update is applied to the document in the Python store
            await copy.insert_one(dict(document))
            applied = await copy.update_one(result["filter"], update)
            assert applied.matched_count == 1
            after = await copy.find_one({"_id": document["_id"]})
            assert after is not None
            # Then every Python field is still there, activeKey is gone when not active,
            # and the tracker reads it
            for field, value in document.items():
                if field in expected_unset:
                    assert field not in after
                elif field not in update["$set"] and field != "history":
                    assert after[field] == value, (version, field)
            assert "__v" not in after
            assert len(after["history"]) == len(document["history"]) + (edit != "metadata edit")
            model = TaskTracker.model_validate(after)
            assert model.active_key is None or model.status.is_active


async def test_node_documents_are_read_by_python(store: str, node_output: dict[str, Any]) -> None:
    # Given the documents the Node service inserts, with the plugin and without it
    collection = TaskTracker.get_pymongo_collection()
    for version in VERSIONS:
        created = node_output["node"][version]
        queued, processing = created["patched_queued"], created["patched_processing"]
        # When Python stores and reads them
        for document in (queued, processing):
            await collection.insert_one(dict(document))
            stored = await collection.find_one({"executionId": document["executionId"]})
            model = TaskTracker.model_validate(stored)
            # Then they are valid executions that carry activeKey = taskId
            assert model.active_key == model.task_id
        # and the processing one a lease and a timeout of processingStartedAt + 300 s
        started = processing["processingStartedAt"]
        assert processing["leaseExpiresAt"] == started + timedelta(seconds=300)
        assert processing["timeoutAt"] == processing["leaseExpiresAt"]
        assert processing["timeoutSeconds"] == 300
        assert processing["claimedBy"].startswith("node:")
        assert "leaseExpiresAt" not in queued
        assert "timeoutAt" not in queued
    # The unpatched service writes neither field on Mongoose 8 and cannot save on Mongoose 9
    unpatched = node_output["node"]["mongoose8"]
    for name in ("unpatched_queued", "unpatched_processing"):
        TaskTracker.model_validate(unpatched[name])
        assert "activeKey" not in unpatched[name]
        assert "leaseExpiresAt" not in unpatched[name]
    for name in ("unpatched_queued", "unpatched_processing"):
        assert "next is not a function" in node_output["node"]["mongoose9"][name]["error"]


async def test_python_respects_patched_node_documents(
    store: str, node_output: dict[str, Any]
) -> None:
    # Given a queued and a processing execution the patched Node service created
    collection = TaskTracker.get_pymongo_collection()
    created = node_output["node"]["mongoose8"]
    queued, processing = created["patched_queued"], created["patched_processing"]
    await collection.insert_many([dict(queued), dict(processing)])
    # When Python enqueues the same task, and claims the processing execution
    again = await tracker.create_execution(queued["taskId"], queued["queueName"], {"n": 1})
    claim = await tracker.claim(processing["executionId"], worker="py", lease=30)
    # Then the task is deduplicated and the Node worker's claim holds
    assert again.deduplicated is True
    assert again.execution.execution_id == queued["executionId"]
    assert claim.won is False


@pytest.mark.parametrize("name", ["unpatched_queued", "unpatched_processing"])
async def test_unpatched_active_node_document_deduplicates(
    store: str, node_output: dict[str, Any], name: str
) -> None:
    # Given an active execution the unpatched Node service wrote (no activeKey)
    document = node_output["node"]["mongoose8"][name]
    await TaskTracker.get_pymongo_collection().insert_one(dict(document))
    # When Python enqueues the same task
    created = await tracker.create_execution(document["taskId"], document["queueName"], {"n": 1})
    # Then the Node execution counts as active: deduplicated, no second execution
    assert created.deduplicated is True
    assert created.execution.execution_id == document["executionId"]


async def test_unpatched_processing_node_document_is_not_claimable_within_its_timeout(
    store: str, node_output: dict[str, Any]
) -> None:
    # Given an execution an unpatched Node worker started a second ago (no leaseExpiresAt,
    # no timeoutSeconds: the queue's timeout, 300 s by default, applies)
    document = node_output["node"]["mongoose8"]["unpatched_processing"]
    assert "leaseExpiresAt" not in document
    await TaskTracker.get_pymongo_collection().insert_one(dict(document))
    # When a Python worker gets the same message
    claim = await tracker.claim(document["executionId"], worker="py", lease=30)
    # Then it does not take the execution over while the Node worker's attempt may still run
    assert claim.won is False


def _python_index_specs() -> list[dict[str, Any]]:
    specs = []
    for index in INDEXES:
        document = dict(index.document)
        spec = {"name": document["name"], "key": [[k, v] for k, v in document["key"].items()]}
        for option in ("unique", "partialFilterExpression", "expireAfterSeconds"):
            if option in document:
                spec[option] = document[option]
        specs.append(spec)
    return specs


def test_index_specs_agree_with_python(node_output: dict[str, Any]) -> None:
    # Given the indexes Python declares and those the plugin declares
    python = sorted(_python_index_specs(), key=lambda spec: spec["name"])
    for version in VERSIONS:
        declared = node_output["indexes"][version]
        # Then the default variant's are the same: names, keys (in order) and options
        assert sorted(declared["default"], key=lambda spec: spec["name"]) == python
        assert declared["collection"] == "task_trackers"
        # and the sharded variant replaces exactly the two unique indexes off the shard key
        sharded = {spec["name"]: spec for spec in declared["sharded"]}
        default = {spec["name"]: spec for spec in declared["default"]}
        assert set(default) - set(sharded) == {"activeKey_1"}
        assert set(sharded) - set(default) == {"taskId_1_activeKey_1"}
        assert "unique" not in sharded["executionId_1"]
        assert sharded["taskId_1_activeKey_1"]["key"] == [["taskId", 1], ["activeKey", 1]]
        assert sharded["taskId_1_activeKey_1"]["unique"] is True
        assert sharded["taskId_1_activeKey_1"]["partialFilterExpression"] == {
            "activeKey": {"$exists": True}
        }
        assert all(spec["key"][0][0] == "taskId" for spec in sharded.values() if spec.get("unique"))


def test_node_tests_pass(node_modules: Path) -> None:
    # Given deploy/mongoose's Node tests (Mongoose 8 and 9 each)
    # When node's built-in runner runs them
    result = subprocess.run(
        ["node", "--test", "deploy/mongoose/test/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then every one passes
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
