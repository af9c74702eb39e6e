"""The judging core shared by batch and online: pairs in, verdict rows out.

It needs an engine (see `Engine`), and knows nothing of where that engine runs: a Ray
Data actor and a Ray Serve replica both call `Judge.judge` with the same pairs and get
the same rows.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Mapping, Protocol, Sequence

from magistrate.judges.calibration import Calibration, calibrated_fields
from magistrate.judges.combine import OrderResult, combine, error_row
from magistrate.judges.generated import FROM_LOGPROBS, FROM_VERDICT, Generation, label_forms, p_first_at_verdict
from magistrate.judges.injection import injection_suspect
from magistrate.judges.profile import JudgeProfile, Mode
from magistrate.judges.registry import get_judge
from magistrate.judges.render import (
    OrderMode,
    final_prompt,
    label_token_ids,
    orders_for,
    render_messages,
)
from magistrate.judges.verdicts import (
    label_mass,
    label_probabilities,
    p_first_from_probabilities,
    p_first_from_verdict,
    verdict_from_probabilities,
)
from magistrate.pairs import INVALID


class Engine(Protocol):
    """What the core needs from an inference engine (actors/engine.py has the vLLM one).
    An async engine has the same methods as coroutines; `Judge.judge_async` drives it."""

    tokenizer: Any
    max_model_len: int
    model: str

    def next_token_logprobs(
        self, prompts: Sequence[list[int]], candidates: Sequence[int]
    ) -> list[dict[int, float]]: ...

    def generate(
        self, prompts: Sequence[list[int]], max_tokens: int, stop: Sequence[str] = (),
        label_ids: Sequence[int] = (),
    ) -> list[Generation]: ...
    # (a plain (text, completion tokens) per prompt is read as a Generation without
    # log-probabilities: p_first then comes from the verdict)


@dataclass(frozen=True)
class JudgeSettings:
    judge: str = "mt-bench"
    mode: Mode | None = None  # None: the profile's default
    order: OrderMode = "both"
    seed: int = 0
    max_new_tokens: int | None = None  # None: the profile's
    # logprob mode: an order whose verdict labels got less next-token probability than
    # this is an error row naming the mass (the model did not mean to answer there)
    min_label_mass: float = 0.0
    # The profile itself, looked up once where the job starts (`resolved`) and carried
    # with the settings to every actor and replica, which never look a judge up by name:
    # a profile registered in the driver exists only there.
    profile: JudgeProfile | None = None
    # A fitted map (`magistrate calibrate`, docs/calibration.md): every row then also has
    # p_a_calibrated, confidence and decided (schema.CALIBRATED_FIELDS).
    calibration: Calibration | None = None

    def resolved(self) -> "JudgeSettings":
        """These settings with the profile looked up and the mode chosen and checked."""
        profile = self.profile or get_judge(self.judge)
        mode = self.mode or profile.default_mode
        if mode not in profile.modes:
            raise ValueError(
                f"judge {profile.name!r} does not support mode {mode!r} "
                f"(it supports {', '.join(profile.modes)})"
            )
        return replace(self, judge=profile.name, profile=profile, mode=mode)


@dataclass
class _Request:
    pair: int
    order: str
    tokens: list[int]


# What a batch host and a Serve replica judge before their first real pair.
WARM_UP_PAIR = {"id": "warm-up", "prompt": "Say hello.", "response_a": "Hello.", "response_b": "Hi!"}


class Judge:
    """A profile bound to an engine and settings."""

    def __init__(self, engine: Engine, settings: JudgeSettings):
        self.engine = engine
        self.settings = settings = settings.resolved()
        self.profile: JudgeProfile = settings.profile
        self.mode: Mode = settings.mode
        self.max_new_tokens = settings.max_new_tokens or self.profile.max_new_tokens
        self.label_ids = (
            label_token_ids(self.profile, engine.tokenizer) if self.mode == "logprob" else {}
        )
        # generate mode: the label tokens whose log-probabilities the engine returns at
        # each step that writes one (judges/generated.py)
        self.label_forms = label_forms(self.profile, engine.tokenizer) if self.mode == "generate" else ()
        self.form_ids = sorted({t for form in self.label_forms for t in form.values()})
        self._cpu: ThreadPoolExecutor | None = None  # judge_async's worker thread

    def _prompt(self, pair: Mapping[str, Any], order: str) -> tuple[list[dict], str]:
        """The chat messages the judge sees for a pair in an order, and the final prompt."""
        messages = render_messages(
            self.profile, pair["prompt"], pair["response_a"], pair["response_b"], order
        )
        return messages, final_prompt(self.profile, messages, self.engine.tokenizer, self.mode)

    def render(self, pair: Mapping[str, Any], order: str) -> tuple[list[dict], list[int]]:
        messages, text = self._prompt(pair, order)
        return messages, self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _budget(self) -> int:
        """Tokens the verdict needs after the prompt."""
        return 1 if self.mode == "logprob" else self.max_new_tokens

    def requests(self, pairs: Sequence[Mapping[str, Any]]) -> tuple[list[list[OrderResult]], list[_Request]]:
        """Render and tokenise every order of every valid pair (one batched tokeniser
        call). Returns per-pair results known already (prompts too long) and the
        requests for the engine."""
        results: list[list[OrderResult]] = [[] for _ in pairs]
        todo = [
            (i, order)
            for i, pair in enumerate(pairs) if not pair.get(INVALID)
            for order in orders_for(self.settings.order, str(pair["id"]), self.settings.seed)
        ]
        texts = []
        for i, order in list(todo):
            try:
                texts.append(self._prompt(pairs[i], order)[1])
            except Exception as exc:  # noqa: BLE001 - one pair's template failure is that pair's error
                results[i].append(OrderResult(order, None, None, error=f"the judge's prompt could not be built: "
                                                                       f"{type(exc).__name__}: {exc}"[:500]))
                todo.remove((i, order))
        encoded = self.engine.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        limit = self.engine.max_model_len - self._budget()
        requests: list[_Request] = []
        for (i, order), tokens in zip(todo, encoded):
            if len(tokens) > limit:
                results[i].append(OrderResult(
                    order, None, None, prompt_tokens=len(tokens),
                    error=f"prompt too long: {len(tokens)} tokens, the judge takes "
                          f"{limit} (context {self.engine.max_model_len}, "
                          f"{self._budget()} kept for the verdict)"))
            else:
                requests.append(_Request(i, order, tokens))
        return results, requests

    def judge(self, pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Verdict fields for each pair (same order). A pair with an `_invalid` message (magistrate/pairs.py)
        becomes an error row without reaching the engine. All orders of all pairs go to
        the engine in one call, so it batches them and its prefix cache shares the
        common prompt head of the two orders."""
        results, requests = self.requests(pairs)
        outputs = self._ask(requests) if requests else []
        return self._collect(pairs, results, requests, outputs)

    async def judge_async(self, pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """`judge` over an async engine (online serving): the same rows for the same
        pairs, while the engine batches these requests with everyone else's. The CPU
        work (rendering, tokenising, reading verdicts) runs on one worker thread, so the
        caller's event loop keeps answering while a large request is prepared."""
        loop = asyncio.get_running_loop()
        if self._cpu is None:
            # One thread: the tokenizer is shared, and one GIL runs the work anyway.
            self._cpu = ThreadPoolExecutor(1, thread_name_prefix="magistrate-judge-cpu")
        results, requests = await loop.run_in_executor(self._cpu, self.requests, pairs)
        outputs = await self._ask(requests) if requests else []
        return await loop.run_in_executor(self._cpu, self._collect, pairs, results, requests, outputs)

    def _ask(self, requests: list[_Request], max_tokens: int | None = None):
        """The engine call for these requests; a coroutine when the engine is async."""
        prompts = [r.tokens for r in requests]
        if self.mode == "logprob":
            return self.engine.next_token_logprobs(prompts, list(dict.fromkeys(self.label_ids.values())))
        return self.engine.generate(prompts, max_tokens or self.max_new_tokens, self.profile.stop,
                                    label_ids=self.form_ids)

    async def warm_up_async(self, pair: Mapping[str, Any] = WARM_UP_PAIR, max_tokens: int = 8) -> None:
        """One order of `pair` through the async engine, its verdict not read: an engine's
        first requests pay one-off costs (seconds on CPU). A few generated tokens pay them;
        at the judge's own cap a generate-mode warm-up decoded a whole rationale."""
        _, requests = self.requests([pair])
        await self._ask(requests[:1], max_tokens=min(max_tokens, self.max_new_tokens))

    def _collect(self, pairs, results, requests, outputs) -> list[dict[str, Any]]:
        if self.mode == "logprob":
            by_id = {token: verdict for verdict, token in self.label_ids.items()}
            for request, logprobs in zip(requests, outputs):
                results[request.pair].append(self._from_logprobs(request, logprobs, by_id))
        else:
            for request, output in zip(requests, outputs):
                results[request.pair].append(self._from_text(request, Generation(*output)))
        return [self._row(pair, sorted(r, key=lambda x: x.order)) for pair, r in zip(pairs, results)]

    def count_tokens(self, pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """A dry run: rows with each order's prompt tokens and every error a real run
        would meet before the engine, but no verdict (winner null unless an error)."""
        results, requests = self.requests(pairs)
        rows = []
        for i, pair in enumerate(pairs):
            row = self._row(pair, [r for r in results[i] if r.error])
            if row["winner"] == "error" and not pair.get(INVALID) and not results[i]:
                row.update(winner=None, error=None)  # nothing failed: the pair is just unjudged
            rows.append(row)
        for request in requests:
            rows[request.pair][f"{request.order}_prompt_tokens"] = len(request.tokens)
        return rows

    def _row(self, pair: Mapping[str, Any], results: list[OrderResult]) -> dict[str, Any]:
        if pair.get(INVALID):
            row = error_row(str(pair[INVALID]))
        else:
            row = combine(results)
        row["injection_suspect"] = (
            None if pair.get(INVALID)
            else injection_suspect(self.profile, pair["prompt"], pair["response_a"], pair["response_b"])
        )
        if self.settings.calibration is not None:
            row.update(calibrated_fields(self.settings.calibration, row))
        return row

    def _from_logprobs(self, request: _Request, logprobs: dict[int, float], by_id) -> OrderResult:
        named = {by_id[t]: lp for t, lp in logprobs.items() if t in by_id}
        if not named:
            return OrderResult(request.order, None, None, prompt_tokens=len(request.tokens),
                               error="the engine returned no probability for any verdict label")
        mass = label_mass(named)
        if mass < self.settings.min_label_mass:
            return OrderResult(request.order, None, None, prompt_tokens=len(request.tokens), completion_tokens=0,
                               label_mass=mass,
                               error=f"the verdict labels got {mass:.3g} of the next-token probability, "
                                     f"under --min-label-mass {self.settings.min_label_mass:g}")
        probs = label_probabilities(named)
        return OrderResult(
            request.order,
            verdict_from_probabilities(probs),
            p_first_from_probabilities(probs),
            prompt_tokens=len(request.tokens),
            completion_tokens=0,
            label_mass=mass,
            p_source=FROM_LOGPROBS,
        )

    def _from_text(self, request: _Request, generation: Generation) -> OrderResult:
        text, n_out = generation.text, generation.completion_tokens
        try:
            reading = self.profile.read(text)
        except Exception as exc:  # noqa: BLE001 - a reader that fails on one output fails that order only
            return OrderResult(request.order, None, None, raw=text, prompt_tokens=len(request.tokens),
                               completion_tokens=n_out,
                               error=f"the judge's reader failed on this output: {type(exc).__name__}: {exc}"[:500])
        p_first = source = None
        if reading.verdict is not None:
            p_first = p_first_at_verdict(generation, reading.label_at, reading.verdict, self.profile.labels,
                                         self.label_forms, self._decode)
            source = FROM_LOGPROBS
            if p_first is None:
                p_first, source = p_first_from_verdict(reading.verdict), FROM_VERDICT
        return OrderResult(
            request.order,
            reading.verdict,
            p_first,
            rationale=reading.rationale,
            raw=text,
            prompt_tokens=len(request.tokens),
            completion_tokens=n_out,
            error=reading.error,
            p_source=source,
        )

    def _decode(self, token_ids: Sequence[int]) -> str:
        """Generated token ids as text, the way vLLM's detokenizer writes them (special
        tokens skipped, no clean-up of spaces)."""
        return self.engine.tokenizer.decode(list(token_ids), skip_special_tokens=True,
                                            clean_up_tokenization_spaces=False)
