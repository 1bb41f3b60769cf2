"""Provenance in the principle memory: what data every principle came from, leaving data out of
recall, old (encoding 1) stores and export files, and the CLI that shows it. Real Chroma throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archlore.agents.cli_memory import memory_app
from archlore.memory.errors import MemoryFormatError, MemoryNeedsMigration, MemoryStoreError
from archlore.memory.migrate import migrate_store
from archlore.memory.record import (
    ENCODING_VERSION,
    UNKNOWN,
    Outcome,
    Principle,
    Provenance,
    TaskInfo,
    archlore_version,
)
from archlore.memory.store import open_store, principle_id
from archlore.tools.errors import ArchloreError

IMAGES = "image classification of 32x32 colour photos"


def P(position: str, choice: str, direction: str = "prefer", confidence: float = 0.8,
      text: str | None = None) -> Principle:
    return Principle(text=text or f"{direction} {choice} at {position}", position=position, choice=choice,
                     direction=direction, confidence=confidence)


def T(task: str, description: str = IMAGES, space: str = "nb201") -> TaskInfo:
    return TaskInfo(space=space, task=task, description=description)


@pytest.fixture
def mem(tmp_path: Path) -> Path:
    return tmp_path / "memory"


@pytest.fixture
def store(mem: Path):
    with open_store(mem, embedding="hash") as s:
        yield s


def test_every_contribution_records_its_provenance(store):
    (pid,) = store.remember([P("e1", "conv")], T("cifar100"), Outcome(best_metric=70.0), "r1",
                            data_tasks=["cifar10", "cifar100", "cifar10"])
    store.remember([P("e1", "conv")], T("cifar100"), Outcome(best_metric=71.0), "r2", data_tasks=("imagenet",))
    rec = store.get(pid)
    assert rec["data_tasks"] == ["cifar10", "cifar100", "imagenet"]  # the union over contributions
    assert rec["archlore_version"] == archlore_version() != "" and rec["archlore_versions"] == [archlore_version()]
    assert [c["data_tasks"] for c in rec["contributions"]] == [["cifar10", "cifar100"], ["imagenet"]]
    assert all(c["archlore_version"] == archlore_version() for c in rec["contributions"])
    for listed in (store.list()[0], store.query("conv", k=1)[0]):
        assert listed["data_tasks"] == rec["data_tasks"] and listed["archlore_version"] == archlore_version()
    (r,) = store.recall("nb201", IMAGES)
    assert r.data_tasks == ("cifar10", "cifar100", "imagenet")
    assert r.provenance == (
        Provenance(space="nb201", task="cifar100", data_tasks=("cifar10", "cifar100"), run_id="r1",
                   archlore_version=archlore_version()),
        Provenance(space="nb201", task="cifar100", data_tasks=("imagenet",), run_id="r2",
                   archlore_version=archlore_version()),
    )
    assert store.data_tasks() == {"cifar10", "cifar100", "imagenet"}
    assert store.data_tasks("nb201") == store.data_tasks() and store.data_tasks("tnb101") == set()


@pytest.mark.parametrize("bad", [None, [], "cifar10", [""], ["ok", 3]])
def test_a_principle_of_unknown_data_origin_is_not_storable_by_accident(store, bad):
    with pytest.raises(MemoryStoreError, match="data_tasks") as err:
        store.remember([P("e", "c")], T("t"), Outcome(), "r", data_tasks=bad)
    assert isinstance(err.value, ArchloreError) and store.count() == 0
    with pytest.raises(TypeError):  # a required keyword: forgetting it is a TypeError, not a silent default
        store.remember([P("e", "c")], T("t"), Outcome(), "r")  # type: ignore[call-arg]


def test_exclude_data_drops_contributions_that_saw_the_data(store):
    # leak: stored for cifar10 but its data included the target cifar100
    store.remember([P("e", "c", confidence=0.9, text="strong")], T("cifar10"), Outcome(best_metric=95.0), "leak",
                   data_tasks=["cifar10", "cifar100"])
    store.remember([P("e", "c", confidence=0.5, text="weak")], T("cifar10"), Outcome(best_metric=90.0), "clean",
                   data_tasks=["cifar10"])
    store.remember([P("e2", "only-leak")], T("svhn"), Outcome(), "leak2", data_tasks=["svhn", "cifar100"])
    assert {r.principle.text for r in store.recall("nb201", IMAGES)} == {"strong", "prefer only-leak at e2"}
    got = store.recall("nb201", IMAGES, exclude_data=["cifar100"])
    assert len(got) == 1  # the principle only the leaking run stated is gone altogether
    (r,) = got
    assert r.run_ids == ("clean",) and r.principle.text == "weak" and r.principle.confidence == 0.5
    assert r.data_tasks == ("cifar10",) and [p.run_id for p in r.provenance] == ["clean"]
    assert r.outcome.best_metric == 90.0
    assert store.recall("nb201", IMAGES, exclude_data=["cifar10", "svhn"]) == []
    assert len(store.recall("nb201", IMAGES, exclude_tasks=["svhn"])) == 1  # by stored task, as before
    with pytest.raises(MemoryStoreError, match="not one string"):
        store.recall("nb201", IMAGES, exclude_data="cifar100")


# --------------------------------------------------------------------------- old stores and files


def _write_v1_store(path: Path) -> list[str]:
    """An encoding-1 memory exactly as archlore wrote it before provenance (flat metadata)."""
    import chromadb
    from chromadb.config import Settings

    from archlore.memory.embeddings import HashEmbedding

    ef = HashEmbedding()
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = client.get_or_create_collection(
        "principles", embedding_function=None, configuration={"hnsw": {"space": "cosine"}},
        metadata={"archlore": "principle memory", "embedding": ef.name(), "embedding_dimension": 256,
                  "encoding_version": 1})
    ids, docs, metas = [], [], []
    for task, choice, desc in (("cifar10", "conv", IMAGES), ("speech", "skip", "keyword spotting in audio")):
        key = {"space": "nb201", "task": task, "position": "e1", "choice": choice, "direction": "prefer"}
        text = f"prefer {choice} at e1"
        contrib = {"run_id": f"old-{task}", "text": text, "confidence": 0.7, "evidence": "", "best_metric": 80.0,
                   "evaluations": 10, "task_description": desc, "metric": "validation accuracy", "created": 1.0}
        ids.append(principle_id(**key))
        docs.append(text)
        metas.append({**key, "confidence": 0.7, "confidence_max": 0.7, "evidence": "", "task_description": desc,
                      "metric": "validation accuracy", "run_id": f"old-{task}", "evaluations": 10,
                      "sources": json.dumps([f"old-{task}"]), "count": 1, "encoding_version": 1, "created": 1.0,
                      "updated": 1.0, "contributions": json.dumps([contrib], sort_keys=True), "best_metric": 80.0})
    col.add(ids=ids, documents=docs, metadatas=metas, embeddings=ef(docs))
    client.close()
    return ids


def test_an_old_store_is_refused_until_migrated_then_its_principles_are_of_unknown_origin(mem: Path):
    ids = _write_v1_store(mem)
    with pytest.raises(MemoryNeedsMigration) as err:
        open_store(mem, embedding="hash")
    msg = str(err.value)
    assert "\n" not in msg and f"archlore memory migrate --memory {mem.resolve()}" in msg
    with pytest.raises(MemoryNeedsMigration):
        open_store(mem, embedding="auto")

    report = migrate_store(mem)
    assert report["from_encoding"] == 1 and report["to_encoding"] == ENCODING_VERSION
    assert report["principles_migrated"] == 2 and report["contributions_marked_unknown"] == 2
    again = migrate_store(mem)  # idempotent: nothing left to migrate
    assert again["principles_migrated"] == 0 and again["tasks_indexed"] == 2

    with open_store(mem, embedding="auto") as s:
        rec = s.get(ids[0])
        assert rec["data_tasks"] == [UNKNOWN] and rec["archlore_version"] == UNKNOWN
        assert rec["encoding_version"] == ENCODING_VERSION and rec["contributions"][0]["data_tasks"] == [UNKNOWN]
        assert rec["sources"] == ["old-cifar10"] and rec["confidence"] == 0.7 and rec["best_metric"] == 80.0
        assert s.data_tasks() == {UNKNOWN}
        assert s.recall("nb201", IMAGES) == []  # unknown origin: left out by default
        got = s.recall("nb201", IMAGES, include_unknown=True)
        assert [r.task.task for r in got] == ["cifar10", "speech"] and got[0].data_tasks == (UNKNOWN,)
        assert s.query("conv", k=1)[0]["id"] == ids[0]
        # new knowledge next to the migrated one recalls as usual
        s.remember([P("e2", "pool")], T("svhn"), Outcome(), "new", data_tasks=["svhn"])
        assert [r.task.task for r in s.recall("nb201", IMAGES)] == ["svhn"]
        meta = s._cols[0].metadata  # the migration is recorded in the collection
        assert meta["migrated_from"] == 1 and meta["encoding_version"] == ENCODING_VERSION
        assert meta["migrated_by"] == archlore_version() and meta["migrated_at"] > 0


def test_migrate_command_and_open_error_exit_2(mem: Path):
    _write_v1_store(mem)
    runner = CliRunner()
    res = runner.invoke(memory_app, ["list", "--memory", str(mem)])
    assert res.exit_code == 2 and "archlore memory migrate" in res.stderr and res.stderr.count("\n") == 1
    res = runner.invoke(memory_app, ["migrate", "--memory", str(mem)])
    assert res.exit_code == 0, res.output
    assert "migrated 2 principle(s)" in res.stdout and "unknown data" in res.stdout
    res = runner.invoke(memory_app, ["migrate", "--memory", str(mem), "--json"])
    assert json.loads(res.stdout)["principles_migrated"] == 0
    res = runner.invoke(memory_app, ["list", "--memory", str(mem), "--json"])
    assert res.exit_code == 0 and {r["data_tasks"][0] for r in json.loads(res.stdout)} == {UNKNOWN}


V1_EXPORT = {
    "format": "archlore-memory", "format_version": 1, "encoding_version": 1, "embedding": "archlore-hash-256",
    "principles": [
        {"text": "prefer conv at e1", "space": "nb201", "task": "cifar10", "position": "e1", "choice": "conv",
         "direction": "prefer", "confidence": 0.7, "contributions": [
             {"run_id": "old", "text": "prefer conv at e1", "confidence": 0.7, "evidence": "", "best_metric": 80.0,
              "evaluations": 10, "task_description": IMAGES, "metric": "validation accuracy", "created": 1.0}]},
        {"text": "avoid pool at e2", "space": "nb201", "task": "cifar10", "position": "e2", "choice": "pool",
         "direction": "avoid", "confidence": 0.6},  # hand-written: no contributions
    ],
}


def test_an_old_export_imports_as_unknown_origin(tmp_path: Path, store):
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(V1_EXPORT))
    assert store.import_(path) == 2
    assert {tuple(r["data_tasks"]) for r in store.list()} == {(UNKNOWN,)}
    assert store.recall("nb201", IMAGES) == [] and len(store.recall("nb201", IMAGES, include_unknown=True)) == 2
    assert store.data_tasks() == {UNKNOWN}


def test_a_new_export_must_name_its_data(tmp_path: Path, store):
    entry = {"text": "prefer conv at e1", "space": "nb201", "task": "cifar10", "position": "e1", "choice": "conv",
             "direction": "prefer", "confidence": 0.7}
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({"format": "archlore-memory", "format_version": 2, "principles": [entry]}))
    with pytest.raises(MemoryFormatError, match=r"principles\.0 has no data_tasks.*\[\"unknown\"\]"):
        store.import_(path)
    path.write_text(json.dumps({"format": "archlore-memory", "format_version": 2,
                                "principles": [{**entry, "data_tasks": "cifar10"}]}))
    with pytest.raises(MemoryFormatError, match="not one string"):
        store.import_(path)
    path.write_text(json.dumps({"format": "archlore-memory", "format_version": 2,
                                "principles": [{**entry, "data_tasks": ["cifar10", "svhn"]}]}))
    assert store.import_(path) == 1 and store.list()[0]["data_tasks"] == ["cifar10", "svhn"]
    assert store.count() == 1


def test_export_import_carries_provenance(tmp_path: Path, store):
    store.remember([P("e1", "conv"), P("e2", "pool", "avoid")], T("cifar100"), Outcome(best_metric=70.0), "r1",
                   data_tasks=["cifar10", "cifar100"])
    store.remember([P("e1", "conv")], T("cifar100"), Outcome(best_metric=72.0), "r2", data_tasks=["imagenet"])
    path = tmp_path / "e.json"
    assert store.export(path) == 2
    data = json.loads(path.read_text())
    assert data["format_version"] == 2 and data["encoding_version"] == ENCODING_VERSION
    assert data["archlore_version"] == archlore_version()
    with open_store(tmp_path / "copy", embedding="hash") as copy:
        assert copy.import_(path) == 2
        assert copy.list() == store.list()
        assert [copy.get(r["id"]) for r in copy.list()] == [store.get(r["id"]) for r in store.list()]
        assert copy.data_tasks() == store.data_tasks() == {"cifar10", "cifar100", "imagenet"}
        assert [r.provenance for r in copy.recall("nb201", IMAGES, exclude_data=["cifar100"])] == \
            [r.provenance for r in store.recall("nb201", IMAGES, exclude_data=["cifar100"])]


def test_forget_updates_the_data_tasks(store):
    store.remember([P("e1", "conv")], T("cifar100"), Outcome(), "r1", data_tasks=["cifar10"])
    store.remember([P("e1", "conv")], T("cifar100"), Outcome(), "r2", data_tasks=["svhn"])
    store.remember([P("e1", "conv")], T("speech", "keyword spotting"), Outcome(), "r3", data_tasks=["speech"])
    assert store.data_tasks() == {"cifar10", "svhn", "speech"}
    store.forget(run_id="r2")
    assert store.data_tasks() == {"cifar10", "speech"}
    store.forget(task="speech")
    assert store.data_tasks() == {"cifar10"} and store.data_tasks("nb201") == {"cifar10"}
    assert [r.task.task for r in store.recall("nb201", "keyword spotting")] == ["cifar100"]


def test_cli_shows_provenance(mem: Path, store):
    (pid,) = store.remember([P("e1", "conv")], T("cifar100"), Outcome(best_metric=70.0), "r1",
                            data_tasks=["cifar10", "cifar100"])
    runner = CliRunner()
    res = runner.invoke(memory_app, ["show", pid, "--memory", str(mem)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "from data: cifar10, cifar100" in res.stdout and archlore_version() in res.stdout
    res = runner.invoke(memory_app, ["list", "--memory", str(mem)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "from data: cifar10, cifar100" in res.stdout
    res = runner.invoke(memory_app, ["query", "conv", "--memory", str(mem)], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "from data: cifar10, cifar100" in res.stdout
    res = runner.invoke(memory_app, ["show", pid, "--memory", str(mem), "--json"])
    shown = json.loads(res.stdout)
    assert shown["data_tasks"] == ["cifar10", "cifar100"] and shown["archlore_version"] == archlore_version()
    assert shown["contributions"][0]["data_tasks"] == ["cifar10", "cifar100"]
