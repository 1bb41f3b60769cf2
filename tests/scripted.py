"""Test doubles for LLMs: a scripted LangChain chat model and a fake OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Returns the scripted messages in order (an Exception in the script is raised)."""

    script: list[Any] = Field(default_factory=list)
    seen: list[Any] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, tool_choice=None, **kwargs):  # noqa: ANN001 - LangChain's signature
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # noqa: ANN001
        self.seen.append(list(messages))
        if not self.script:
            raise AssertionError("the scripted model ran out of answers")
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return ChatResult(generations=[ChatGeneration(message=item)])


def tool_answer(name: str, args: dict | str, call_id: str = "c1") -> AIMessage:
    if isinstance(args, str):
        return AIMessage(content="", invalid_tool_calls=[{"name": name, "args": args, "id": call_id, "error": "bad json", "type": "invalid_tool_call"}])
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}], usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120})


def completion(name: str | None, arguments: str | None = None, content: str | None = None) -> dict:
    """An OpenAI chat.completion body: a function call with raw `arguments` text, or plain content."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if name:
        message["tool_calls"] = [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if name else "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


Check = Callable[[dict], None]  # asserts on the JSON body of one request


def message_text(request: dict, *, role: str | None = None) -> str:
    """The contents of a chat request's messages (of one role), joined."""
    parts = []
    for m in request.get("messages", []):
        if role is None or m.get("role") == role:
            c = m.get("content")
            parts.append(c if isinstance(c, str) else json.dumps(c))
    return "\n".join(parts)


def expect(*needles: str, role: str | None = None, last: bool = False, absent: tuple[str, ...] = ()) -> Check:
    """A check that the request's messages (of `role`, or only the last message) contain every
    needle and none of `absent`."""

    def check(request: dict) -> None:
        text = message_text({"messages": request["messages"][-1:]} if last else request, role=role)
        missing = [n for n in needles if n not in text]
        assert not missing, f"prompt lacks {missing!r}; it was: {text[-1500:]!r}"
        present = [n for n in absent if n in text]
        assert not present, f"prompt should not contain {present!r}"

    return check


class FakeOpenAI:
    """An OpenAI-compatible HTTP server on 127.0.0.1 answering from a script.

    A script item is `(status, body)` or `(status, body, check)`: `check(request)` asserts on the
    request that item answers. Failed checks are collected (the handler thread cannot fail the
    test) and raised when the server closes, with the request's position in the script.
    """

    def __init__(self, script: list[tuple]) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        self.failures: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                item = outer.script.pop(0) if outer.script else (500, {"error": {"message": "script exhausted"}})
                status, payload = item[0], item[1]
                if len(item) > 2:
                    try:
                        item[2](body)
                    except AssertionError as exc:
                        outer.failures.append(f"request {len(outer.requests)}: {exc}")
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        if exc_type is None and self.failures:
            raise AssertionError("the fake server's checks failed:\n" + "\n".join(self.failures))


class ByFunction(list):
    """A FakeOpenAI script answering by the schema a request asks for: the function it forces
    (`tool_choice`) or the title of its `response_format` schema (JSON mode); None for neither.
    An answer is `(status, body)` or a function of the request that returns one."""

    def __init__(self, server: FakeOpenAI, answers: dict[str | None, Any]) -> None:
        super().__init__()
        self.server, self.answers, self.asked = server, answers, []

    def __bool__(self) -> bool:
        return True

    def pop(self, index: int = 0) -> tuple:
        request = self.server.requests[-1]
        fmt = request.get("response_format") or {}
        choice = request.get("tool_choice")
        name = (fmt.get("schema") or {}).get("title") or (
            (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None)
        self.asked.append(name)
        answer = self.answers[name]
        return answer(request) if callable(answer) else answer
