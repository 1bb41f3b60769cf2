"""A model per agent role: parsing and validation of `--llm` and `--llm-config`, per-backend-kind
defaults, settings that survive --resume, the one-line CLI errors, and one local server shared by
every role that uses it (a stand-in server on loopback; the real model is never started here)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import ExitStack

import pytest
from archlore.agents import roles
from archlore.agents.context import RunSettings
from archlore.agents.runner import load_settings, make_llm
from archlore.tools.errors import ConfigError

from .scripted import FakeOpenAI

CLI = [sys.executable, "-m", "archlore.agents.cli"]


def _labels(plans: dict[str, roles.RolePlan]) -> dict[str, str]:
    return {r: p.label for r, p in plans.items()}


def test_one_backend_means_every_role():
    assert _labels(roles.resolve("local")) == dict.fromkeys(roles.ROLES, "local")
    assert _labels(roles.resolve("none")) == dict.fromkeys(roles.ROLES, "none")
    chain = roles.resolve("openai:gpt-4o-mini>local>none")["ranker"]
    assert [link.label for link in chain.links] == ["openai:gpt-4o-mini", "local", "none"]


def test_roles_take_their_own_chains_and_the_rest_the_default():
    plans = roles.resolve("analyst=openai:gpt-4o-mini>local>none, planner=local,default=none")
    assert _labels(plans) == {"analyst": "openai:gpt-4o-mini>local>none", "planner": "local",
                              "ranker": "none", "coordinator": "none"}
    # without default, roles not named have no LLM
    assert _labels(roles.resolve("planner=local"))["analyst"] == "none"
    # a base URL with a port is one backend, not a role item
    url = "openai:qwen@http://127.0.0.1:8080/v1"
    assert roles.resolve(f"analyst={url}>none")["analyst"].links[0].spec.base_url == "http://127.0.0.1:8080/v1"


def test_defaults_follow_the_backend_kind_and_explicit_settings_win():
    a = roles.resolve("analyst=openai:gpt-4o-mini>local")["analyst"].links
    assert (a[0].settings.timeout, a[0].settings.retries) == (120.0, 4)  # hosted
    assert (a[1].settings.timeout, a[1].settings.retries) == (600.0, 1)  # local
    # the run-wide --llm-timeout/--llm-retries, then the config's default, then the role's own
    cfg = {"default": {"retries": 2}, "analyst": {"timeout": 30, "temperature": 0.3, "max_tokens": 500}}
    a = roles.resolve("analyst=openai:gpt-4o-mini>local,planner=local", cfg, timeout=90.0, retries=3)
    assert [(x.settings.timeout, x.settings.retries, x.settings.temperature, x.settings.max_tokens) for x in a["analyst"].links] \
        == [(30, 2, 0.3, 500), (30, 2, 0.3, 500)]
    assert (a["planner"].links[0].settings.timeout, a["planner"].links[0].settings.retries) == (90.0, 2)


def test_config_backends_win_over_llm_for_the_roles_they_name():
    plans = roles.resolve("local", {"planner": "none", "analyst": {"backend": "openai:gpt-4o-mini>none", "retries": 0}})
    assert _labels(plans) == {"analyst": "openai:gpt-4o-mini>none", "planner": "none", "ranker": "local", "coordinator": "local"}


@pytest.mark.parametrize(("llm", "config", "message"), [
    ("analist=local", None, "unknown role 'analist' in --llm: use analyst, planner, ranker, coordinator or default"),
    ("analyst=lokal", None, "unknown --llm 'lokal'"),
    ("analyst=local,analyst=none", None, "names role 'analyst' twice"),
    ("analyst=none>local", None, "'none' must be last"),
    ("local>local", None, "local appears twice"),
    ("analyst=", None, "has an empty backend"),
    ("analyst=local,,planner=none", None, "has an empty item between commas"),
    ("local>", None, "has an empty backend"),
    ("openai:", None, "needs a model name"),
    ("none", {"chat": "local"}, "unknown role 'chat'"),
    ("none", {"analyst": {"backend": "local", "timout": 3}}, "analyst.timout: Extra inputs are not permitted"),
    ("none", {"analyst": {"retries": -1}}, "analyst.retries: Input should be greater than or equal to 0"),
    ("none", {"analyst": {"temperature": 5}}, "analyst.temperature"),
    ("none", {"analyst": 3}, "analyst must be a backend chain or a mapping"),
    ("none", ["analyst"], "must map roles"),
])
def test_bad_assignments_are_one_line_config_errors(llm, config, message):
    with pytest.raises(ConfigError) as info:
        RunSettings(run_id="x", llm=llm, llm_config=config)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_config_file_is_read_checked_and_kept_in_the_settings_for_resume(tmp_path):
    f = tmp_path / "llm.yaml"
    f.write_text("analyst:\n  backend: openai:gpt-4o-mini>local>none\n  timeout: 45\nplanner: local\ndefault: none\n")
    cfg = roles.load_config(f)
    assert cfg == {"analyst": {"backend": "openai:gpt-4o-mini>local>none", "timeout": 45.0},
                   "planner": {"backend": "local"}, "default": {"backend": "none"}}
    s = RunSettings(run_id="r", llm_config=cfg)
    s.save(tmp_path / "settings.json")
    back = load_settings(tmp_path)
    assert back.llm_config == cfg and back == s
    bad = tmp_path / "bad.yaml"
    bad.write_text("analyst: [local\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        roles.load_config(bad)
    with pytest.raises(ConfigError, match="cannot read --llm-config"):
        roles.load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("args", "message"), [
    (["--llm", "analyst=local,coordinater=none"], "unknown role 'coordinater'"),
    (["--llm", "planner=gpt-4o"], "unknown --llm 'gpt-4o'"),
    (["--llm-config", "MISSING.yaml"], "cannot read --llm-config"),
])
def test_cli_says_what_is_wrong_in_one_line_and_exits_2(tmp_path, args, message):
    p = subprocess.run(CLI + ["run", "--runs-dir", str(tmp_path), "-q", "--memory", "off", *args],
                       check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert not list(tmp_path.iterdir())  # nothing created


class _StandIn:
    """Stands in for LocalLLMServer: counts starts; its `base_url` is a fake OpenAI server."""

    starts = 0

    def __init__(self, url: str) -> None:
        self.base_url, self.model = url, "stand-in"

    def __enter__(self):
        type(self).starts += 1
        return self

    def __exit__(self, *exc):
        return None


def test_one_local_server_for_every_role(monkeypatch):
    from archlore.agents import local_llm

    with FakeOpenAI([]) as server:
        _StandIn.starts = 0
        monkeypatch.setattr(local_llm, "LocalLLMServer", lambda: _StandIn(server.base_url))
        s = RunSettings(run_id="x", llm="analyst=local,planner=local,ranker=openai:gpt-4o-mini@http://127.0.0.1:9/v1>local",
                        llm_config={"planner": {"temperature": 0.5}})
        with ExitStack() as stack:
            llms = make_llm(s, stack)
            assert _StandIn.starts == 1  # started at once: two chains begin with local
            a, p = llms.get("analyst"), llms.get("planner")
            ranker_local = llms.get("ranker").chain[1]
            for backend in (a.current, p.current, ranker_local):
                backend.client()
            assert _StandIn.starts == 1  # ... and shared by all three roles
            # different settings are different clients of the same server
            assert a.current.client() is not p.current.client()
            assert a.current.client().model.openai_api_base == p.current.client().model.openai_api_base == server.base_url
            assert llms.get("coordinator") is None  # none: the statistical path


def test_a_fallback_only_local_server_starts_only_when_needed(monkeypatch):
    from archlore.agents import local_llm

    _StandIn.starts = 0
    monkeypatch.setattr(local_llm, "LocalLLMServer", lambda: _StandIn("http://127.0.0.1:9/v1"))
    with ExitStack() as stack:
        llms = make_llm(RunSettings(run_id="x", llm="analyst=openai:m@http://127.0.0.1:9/v1>local>none"), stack)
        assert _StandIn.starts == 0
        llms.get("analyst").chain[1].client()
        assert _StandIn.starts == 1
    # no LLM for any role: no clients at all
    with ExitStack() as stack:
        assert make_llm(RunSettings(run_id="x", llm="analyst=none,default=none"), stack) is None


def test_a_single_backend_without_fallback_still_fails_at_the_start(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    from archlore.tools import env as env_mod

    if hasattr(env_mod.env, "cache_clear"):
        env_mod.env.cache_clear()
    with ExitStack() as stack, pytest.raises(ConfigError, match="needs OPENAI_API_KEY"):
        make_llm(RunSettings(run_id="x", llm="analyst=openai:gpt-4o-mini"), stack)
    with ExitStack() as stack:  # with a fallback the run starts; the first call falls over
        llms = make_llm(RunSettings(run_id="x", llm="analyst=openai:gpt-4o-mini>none"), stack)
        assert llms.get("analyst").name == "openai:gpt-4o-mini"


def test_an_unknown_role_asked_at_run_time_is_refused():
    with ExitStack() as stack, FakeOpenAI([]) as server:
        llms = make_llm(RunSettings(run_id="x", llm=f"openai:m@{server.base_url}"), stack)
        with pytest.raises(ConfigError, match="unknown role 'chooser'"):
            llms.get("chooser")
