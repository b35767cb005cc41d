"""Which model, class and CAM method explain a cell: the choices the gateway offers the logged-in key (its
capabilities: the classifier models with the CAM methods each accepts, and the classes), kept a short while
per key, and the check of a submitted choice against them. An empty field is the gateway's default: its
default explain model, that model's predicted class, that model's default method."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from console.users import role_allows
from hemascope.client import HemascopeClientError
from hemascope.client.stubs import analysis_pb2

if TYPE_CHECKING:
    from console.sessions import Session
    from console.web import Console

CAPABILITIES_TIMEOUT_S = 10.0
CHOICE_FIELDS = ("explain_model", "explain_class", "explain_method")
"""The form fields of a choice, in ``ExplainChoices.check``'s order."""


def _echo(value: str) -> str:
    return repr(value[:64])


class BadChoice(ValueError):
    """A choice the gateway does not offer (400), or one that cannot be checked now (503)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ExplainChoice:
    """A checked choice; empty fields leave the gateway's default."""

    model: str = ""
    class_name: str = ""
    method: str = ""

    def apply(self, options: analysis_pb2.AnalyzeOptions) -> analysis_pb2.AnalyzeOptions:
        options.explain_model = self.model
        options.explain_class = self.class_name
        options.explain_method = self.method
        return options


@dataclass(frozen=True)
class ExplainChoices:
    """What the gateway offers: each model with its CAM methods (the first is its default), the classes;
    ``problem`` says why there is nothing to choose from (the gateway did not answer)."""

    models: tuple[tuple[str, tuple[str, ...]], ...] = ()
    classes: tuple[str, ...] = ()
    problem: str = ""

    @classmethod
    def from_capabilities(cls, caps: analysis_pb2.GetCapabilitiesResponse) -> ExplainChoices:
        models = tuple((m.name, tuple(m.explain_methods)) for m in caps.models)
        problem = "" if models else "the gateway lists no classifier models"
        return cls(models, tuple(caps.classes), problem)

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method some model accepts, in the order the gateway lists them."""
        seen: dict[str, None] = {}
        for _, methods in self.models:
            seen |= dict.fromkeys(methods)
        return tuple(seen)

    def supporting(self, method: str) -> tuple[str, ...]:
        """The models that accept ``method``."""
        return tuple(name for name, methods in self.models if method in methods)

    def check(
        self, explain_model: str = "", explain_class: str = "", explain_method: str = ""
    ) -> ExplainChoice:
        """The submitted choice if the gateway offers it: a listed model, a listed class, and a method that
        model accepts (any listed method with the gateway's default model, whose methods the gateway checks
        itself); BadChoice naming what is offered otherwise."""
        choice = ExplainChoice(explain_model, explain_class, explain_method)
        if choice == ExplainChoice():
            return choice
        if self.problem:
            raise BadChoice(f"The explanation cannot be chosen now: {self.problem}.", 503)
        models = dict(self.models)
        if choice.model and choice.model not in models:
            raise BadChoice(f"Explain with one of the models {', '.join(models)}, not {_echo(choice.model)}.")
        if choice.class_name and choice.class_name not in self.classes:
            raise BadChoice(
                f"Explain one of the classes {', '.join(self.classes)}, not {_echo(choice.class_name)}."
            )
        offered = models[choice.model] if choice.model else self.methods
        if choice.method and choice.method not in offered:
            whose = f"{choice.model} accepts" if choice.model else "the models accept"
            raise BadChoice(
                f"The methods {whose} are {', '.join(offered) or 'none'}, not {_echo(choice.method)}."
            )
        return choice


class CapabilitiesCache:
    """The explain choices per API key, asked of the gateway at most once a minute (once every ten seconds
    while it does not answer): result cards are re-rendered every second while a batch runs."""

    def __init__(
        self, ttl_s: float = 60.0, failed_ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s, self._failed_ttl_s, self._clock = ttl_s, failed_ttl_s, clock
        self._entries: dict[str, tuple[float, ExplainChoices]] = {}

    async def get(self, api_key: str, fetch: Callable[[], Awaitable[ExplainChoices]]) -> ExplainChoices:
        slot = hashlib.sha256(api_key.encode()).hexdigest()
        now = self._clock()
        cached = self._entries.get(slot)
        if cached is not None and cached[0] > now:
            return cached[1]
        choices = await fetch()
        self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
        self._entries[slot] = (now + (self._failed_ttl_s if choices.problem else self._ttl_s), choices)
        return choices


async def explain_choices(console: Console, session: Session) -> ExplainChoices:
    """The choices the gateway offers this session's key (cached a short while)."""
    api_key = session.api_key or ""

    async def fetch() -> ExplainChoices:
        client = console.client_factory(api_key)
        try:
            caps = await client.capabilities(timeout=CAPABILITIES_TIMEOUT_S)
        except HemascopeClientError as exc:
            return ExplainChoices(problem=f"the gateway did not list its models ({exc.code.name})")
        finally:
            await client.close()
        return ExplainChoices.from_capabilities(caps)

    return await console.capabilities.get(api_key, fetch)


async def card_choices(
    console: Console, session: Session, items: list[dict[str, Any]]
) -> ExplainChoices | None:
    """The choices of the result cards' "Explain with" form: for reviewers and admins only (None for
    viewers, who see the stored overlay), and only asked for when a card shows an analysed cell."""
    if session.user is None or not role_allows(session.user.role, "reviewer"):
        return None
    if not any(item["kind"] == "cell" and item["status"] == "done" for item in items):
        return None
    return await explain_choices(console, session)
