"""Every way the memory can be handed bad input ends in an ArchloreError whose one-line message
names the fix, and `archlore memory` exits with status 2 on it. Real Chroma, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archlore.agents.cli_memory import memory_app
from archlore.memory.errors import MemoryCorrupt, MemoryFormatError, MemoryStoreError, MemoryUnavailable
from archlore.memory.record import Outcome, Principle, TaskInfo
from archlore.memory.store import open_store
from archlore.tools.errors import ArchloreError


def _one_line_exit_2(args: list[str], *fix: str) -> str:
    res = CliRunner().invoke(memory_app, args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.output and res.stdout == ""
    for words in fix:
        assert words in res.stderr, res.stderr
    return res.stderr


def test_a_folder_of_garbage_is_not_a_memory(tmp_path: Path):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "chroma.sqlite3").write_bytes(bytes(range(256)) * 40)
    with pytest.raises(MemoryCorrupt, match="not a readable Chroma store.*empty or new folder.*export"):
        open_store(garbage, embedding="hash")
    _one_line_exit_2(["list", "--memory", str(garbage), "--embedding", "hash"], "empty or new folder")


def test_a_folder_of_other_files_is_left_alone(tmp_path: Path):
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.tex").write_text("do not scatter a database in here")
    with pytest.raises(MemoryCorrupt, match=r"holds other files \(thesis.tex\).*empty or new folder"):
        open_store(other, embedding="hash")
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]
    _one_line_exit_2(["query", "x", "--memory", str(other)], "empty or new folder")


def test_a_file_where_the_folder_should_be(tmp_path: Path):
    path = tmp_path / "memory"
    path.write_text("x")
    with pytest.raises(MemoryUnavailable, match="is a file, not a folder"):
        open_store(path, embedding="hash")
    _one_line_exit_2(["list", "--memory", str(path)], "--memory with a folder")


def test_a_chroma_collection_archlore_did_not_make(tmp_path: Path):
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(tmp_path / "m"), settings=Settings(anonymized_telemetry=False))
    client.create_collection("principles", embedding_function=None)
    client.close()
    with pytest.raises(MemoryStoreError, match="not made by archlore; point --memory at another path"):
        open_store(tmp_path / "m", embedding="hash")


def test_a_damaged_record_names_the_one_to_forget(tmp_path: Path):
    mem = tmp_path / "m"
    with open_store(mem, embedding="hash") as s:
        a, b = s.remember(
            [Principle(text="a", position="e1", choice="x", direction="prefer", confidence=0.5),
             Principle(text="b", position="e2", choice="y", direction="prefer", confidence=0.5)],
            TaskInfo(space="nb201", task="t", description="d"), Outcome(), "r", data_tasks=["t"])
        with s._session(write=True) as (col, _):
            col.update(ids=[a], metadatas=[{"record": "{not json"}])
        with pytest.raises(MemoryCorrupt, match=f"forget --id {a}"):
            s.list()
    _one_line_exit_2(["list", "--memory", str(mem)], f"archlore memory forget --id {a}")
    res = CliRunner().invoke(memory_app, ["forget", "--id", a, "--yes", "--memory", str(mem)])
    assert res.exit_code == 0, res.output
    with open_store(mem, embedding="hash") as s:
        assert [r["id"] for r in s.list()] == [b]


GOOD = {"text": "prefer conv at e1", "space": "nb201", "task": "cifar10", "position": "e1", "choice": "conv",
        "direction": "prefer", "confidence": 0.7, "data_tasks": ["cifar10"]}
CORRUPT_EXPORTS = {
    "truncated": ('{"format": "archlore-memory", "format_version": 2, "principles": [', "not JSON"),
    "binary": (bytes(range(128, 256)) * 8, "not text"),
    "a list": ("[]", "not an archlore memory export"),
    "no principles": (json.dumps({"format": "archlore-memory", "format_version": 2}), "principles"),
    "principles not a list": (json.dumps({"format": "archlore-memory", "format_version": 2, "principles": 3}),
                              "principles"),
    "another format": (json.dumps({"format": "something-else", "format_version": 2, "principles": []}), "format"),
    "newer": (json.dumps({"format": "archlore-memory", "format_version": 99, "principles": []}), "upgrade archlore"),
    "confidence out of range": (json.dumps({"format": "archlore-memory", "format_version": 2,
                                            "principles": [{**GOOD, "confidence": 7}]}), "confidence"),
    "text too long": (json.dumps({"format": "archlore-memory", "format_version": 2,
                                  "principles": [{**GOOD, "text": "x" * 1000}]}), "text"),
    "empty data task": (json.dumps({"format": "archlore-memory", "format_version": 2,
                                    "principles": [{**GOOD, "data_tasks": [""]}]}), "data_tasks"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_EXPORTS))
def test_a_corrupt_export_is_refused_whole(tmp_path: Path, case: str):
    content, words = CORRUPT_EXPORTS[case]
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    mem = tmp_path / "m"
    with open_store(mem, embedding="hash") as s:
        with pytest.raises(MemoryFormatError, match=words) as err:
            s.import_(path)
        assert isinstance(err.value, ArchloreError) and "\n" not in str(err.value)
        assert s.count() == 0  # nothing of a bad file gets in
    _one_line_exit_2(["import", str(path), "--memory", str(mem)], words)


def test_bad_arguments_name_the_fix(tmp_path: Path):
    with open_store(tmp_path / "m", embedding="hash") as s:
        with pytest.raises(MemoryStoreError, match="k must be at least 1"):
            s.recall("nb201", "x", k=0)
        with pytest.raises(MemoryStoreError, match=r"not one string: pass \['cifar10'\]"):
            s.recall("nb201", "x", exclude_tasks="cifar10")
        with pytest.raises(MemoryStoreError, match="run_id must be a non-empty string"):
            s.remember([], TaskInfo(space="s", task="t"), Outcome(), " ", data_tasks=["t"])
        with pytest.raises(MemoryStoreError, match="choose one of minilm, hash"):
            open_store(tmp_path / "n", embedding="glove")
    with pytest.raises(MemoryStoreError, match="cannot read a port"):
        open_store("http://localhost:notaport", embedding="hash")
    _one_line_exit_2(["export", str(tmp_path / "m"), "--memory", str(tmp_path / "m")], "writable path")
