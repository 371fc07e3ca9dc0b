"""Runtime: one place that turns tier names into ready dspy.LM objects over a shared cache and ledger."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import dspy

from pipelines.answers import field_type, parse_typed
from pipelines.backends import backend_for
from pipelines.cache import CallCache
from pipelines.engine import TierEngine
from pipelines.ledger import Ledger
from pipelines.tiers import Catalog, default_catalog

class TierwiseAdapter(dspy.ChatAdapter):
    """DSPy's ChatAdapter, with a plain prompt for one-output signatures.

    Small models follow plain instructions far better than ChatAdapter's field-marker protocol: on the
    support intent task the 1.5B local tier scored 3/10 with markers and 6/10 with the same
    instructions as a plain chat (measured). So a signature with one output field is asked plainly
    (instructions and field description as the system message, the inputs as the user message, the bare
    answer back); several output fields keep ChatAdapter's format. Parse failures stay failures: the
    cascade treats the rung as failed instead of paying for a second JSON-mode attempt. A typed output
    field (a `Literal` of labels, a pydantic-validated type) is checked here the same way
    (pipelines.answers): an answer outside the type is a failed rung, so the cascade climbs."""

    def __init__(self):
        super().__init__(use_json_adapter_fallback=False)

    @staticmethod
    def _single_output(signature) -> str | None:
        fields = list(signature.output_fields)
        return fields[0] if len(fields) == 1 else None

    def format(self, signature, demos, inputs):
        field = self._single_output(signature)
        if field is None:
            return super().format(signature, demos, inputs)
        info = signature.output_fields[field]
        desc = (info.json_schema_extra or {}).get("desc", "") if hasattr(info, "json_schema_extra") else ""
        desc = "" if not desc or desc.startswith("${") else f" ({desc})"
        system = f"{signature.instructions.strip()}\nAnswer with the `{field}`{desc} only, nothing else."
        messages = [{"role": "system", "content": system}]
        for demo in demos:
            if field in demo and all(k in demo for k in signature.input_fields):
                messages.append({"role": "user", "content": self._plain_inputs(signature, demo)})
                messages.append({"role": "assistant", "content": str(demo[field])})
        messages.append({"role": "user", "content": self._plain_inputs(signature, inputs)})
        return messages

    @staticmethod
    def _plain_inputs(signature, values) -> str:
        names = [k for k in signature.input_fields if k in values]
        if len(names) == 1:
            return str(values[names[0]])
        return "\n".join(f"{k}: {values[k]}" for k in names)

    def parse(self, signature, completion):
        field = self._single_output(signature)
        if field is None:
            return super().parse(signature, completion)
        text = completion.split("[[ ## completed")[0]
        text = re.sub(r"\[\[ ## \w+ ## \]\]", " ", text).strip()  # a model that still writes markers
        if not text:
            raise dspy.utils.exceptions.AdapterParseError(
                adapter_name="TierwiseAdapter", signature=signature, lm_response=completion,
                message="empty answer")
        answer = text.splitlines()[0].strip()
        try:
            return {field: parse_typed(answer, field_type(signature.output_fields[field]))}
        except Exception as e:  # noqa: BLE001 - pydantic and dspy raise several kinds; all mean "not an answer"
            raise dspy.utils.exceptions.AdapterParseError(
                adapter_name="TierwiseAdapter", signature=signature, lm_response=completion,
                message=str(e).splitlines()[0][:200]) from e


ADAPTER = TierwiseAdapter()
# Generation ends at the completion marker: the tokens after it are never read, only paid for.
STOP_MARKER = "[[ ## completed"


class Runtime:
    def __init__(self, catalog: Catalog | None = None, cache: CallCache | None = None,
                 ledger: Ledger | None = None, scripts: dict | None = None):
        self.catalog = catalog or default_catalog()
        self.cache = cache if cache is not None else CallCache()
        self.ledger = ledger if ledger is not None else Ledger()
        self.scripts = scripts  # fake/<name> tiers only
        self._lms: dict[str, dspy.LM] = {}
        self._engines: dict[str, TierEngine] = {}
        self._lock = threading.Lock()

    def engine(self, tier_name: str) -> TierEngine:
        with self._lock:
            if tier_name not in self._engines:
                tier = self.catalog[tier_name]
                self._engines[tier_name] = TierEngine(tier, backend_for(tier, self.scripts), self.cache, self.ledger)
            return self._engines[tier_name]

    def lm(self, tier_name: str) -> dspy.LM:
        engine = self.engine(tier_name)
        with self._lock:
            if tier_name not in self._lms:
                tier = engine.tier
                wants_logprobs = tier.is_local or tier.model.startswith("fake/")
                extra = {"logprobs": True, "top_logprobs": 1} if wants_logprobs else {}
                self._lms[tier_name] = dspy.LM(
                    tier.model, engine=engine, cache=False, num_retries=0,
                    temperature=tier.setting("temperature"), max_tokens=tier.setting("max_tokens"),
                    stop=tier.setting("stop") or [STOP_MARKER], **extra,
                )
            return self._lms[tier_name]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.cache.close()


def project_dir() -> Path:
    return Path(".tierwise")
