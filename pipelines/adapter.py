"""TierwiseAdapter: DSPy's ChatAdapter, with a plain prompt for one-output signatures.

Small models follow plain instructions far better than ChatAdapter's field-marker protocol: on the
support intent task the 1.5B local tier scored 3/10 with markers and 6/10 with the same
instructions as a plain chat (measured). So a signature with one output field is asked plainly (the
instructions and a description of every field as the system message, the inputs as the user
message, the bare answer back); several output fields keep ChatAdapter's format.

The plain prompt says everything ChatAdapter would say about the signature: each field's name, type
and description, a Literal's or Enum's allowed values, a number's or bool's form, the JSON schema of
a structured output, custom types' descriptions and constraints. A program is the program its author
wrote: a `Literal[LABELS]` output without a description must still show the model its labels.

Parse failures stay failures: the cascade treats the rung as failed instead of paying for a second
JSON-mode attempt. A typed output (a `Literal` of labels, a pydantic-validated type) is checked here
(pipelines.answers): an answer outside the type is a failed rung, so the cascade climbs.
"""

from __future__ import annotations

import enum
import re
from typing import Literal, get_args, get_origin

import dspy
import pydantic
from dspy.adapters.types.base_type import Type as DspyType
from dspy.adapters.utils import format_field_value, get_annotation_name, translate_field_type

from pipelines.answers import field_type, parse_typed

# Generation ends at the completion marker: the tokens after it are never read, only paid for.
STOP_MARKER = "[[ ## completed"
_SCALAR_TYPES = (str, bool, int, float)


def _desc(name: str, info) -> str:
    desc = (info.json_schema_extra or {}).get("desc", "")
    return "" if not desc or desc == f"${{{name}}}" else desc


def choices(annotation) -> list[str] | None:
    """A `Literal`'s labels or an `Enum`'s values, as text; None for any other type."""
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return None


def _names_every(text: str, choices: list[str]) -> bool:
    return all(re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text) for c in choices)


def describe_field(name: str, info) -> str:
    """One field as ChatAdapter's field list and structure notes state it, written once.

    A Literal's choices appear once: in the author's description when it already names them all (as
    the shipped support task's does), else as ChatAdapter's own note."""
    annotation = info.annotation
    desc = _desc(name, info)
    allowed = choices(annotation)
    type_name = "one label" if get_origin(annotation) is Literal else get_annotation_name(annotation)
    line = f"`{name}` ({type_name})" + (f": {desc}" if desc else "")
    for custom in DspyType.extract_custom_type_from_annotation(info.rebuild_annotation()):
        if custom.description():
            line += f"\n  Type description of {get_annotation_name(custom)}: {custom.description()}"
    constraints = (info.json_schema_extra or {}).get("constraints")
    if constraints:
        line += f"\n  Constraints: {constraints}"
    is_output = (info.json_schema_extra or {}).get("__dspy_field_type") == "output"
    if is_output and not (allowed and _names_every(desc, allowed)):
        note = translate_field_type(name, info).split("# note: ", 1)
        if len(note) == 2:
            line += f"\n  Note: {note[1].strip()}"
    return line


def json_input(annotation, value):
    """A pydantic-typed input (a dspy.History too) from its JSON form: a dict, or for a History its list of
    turns; any other value as it is. Raises pydantic.ValidationError when the JSON does not fit the model."""
    if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)) or isinstance(value, annotation):
        return value
    if annotation is dspy.History and isinstance(value, list):
        value = {"messages": value}
    return annotation.model_validate(value) if isinstance(value, dict) else value


def _history(value) -> dspy.History:
    """A dspy.History input as given or from its JSON form; anything else is no history."""
    try:
        value = json_input(dspy.History, value)
    except pydantic.ValidationError:
        pass
    return value if isinstance(value, dspy.History) else dspy.History(messages=[])


class TierwiseAdapter(dspy.ChatAdapter):
    __doc__ = __doc__

    def __init__(self):
        super().__init__(use_json_adapter_fallback=False)

    @staticmethod
    def single_output(signature) -> str | None:
        fields = list(signature.output_fields)
        return fields[0] if len(fields) == 1 else None

    def format(self, signature, demos, inputs):
        history_name = self._get_history_field_name(signature)
        if history_name in inputs:  # given as JSON by code that called the program directly
            inputs = {**inputs, history_name: _history(inputs[history_name])}
        field = self.single_output(signature)
        if field is None:
            return super().format(signature, demos, inputs)
        info = signature.output_fields[field]
        history = inputs[history_name].messages if history_name in inputs else []
        if history_name:  # a dspy.History is earlier turns of the chat, as ChatAdapter sends it, not an input
            signature = signature.delete(history_name)
        described = [describe_field(k, v) for k, v in signature.input_fields.items()]
        system = "\n".join([
            signature.instructions.strip(),
            "",
            ("Input: " if len(described) == 1 else "Inputs:\n") + "\n".join(described),
            f"Output: {describe_field(field, info)}",
            f"Answer with the `{field}` only, nothing else.",
        ])
        messages = [{"role": "system", "content": system}]
        for demo in demos:
            if field in demo and all(k in demo for k in signature.input_fields):
                messages.append({"role": "user", "content": self._plain_inputs(signature, demo)})
                messages.append({"role": "assistant", "content": self._plain_value(info, demo[field])})
        for turn in history:
            if any(k in turn for k in signature.input_fields):
                messages.append({"role": "user", "content": self._plain_inputs(signature, turn)})
            if field in turn:
                messages.append({"role": "assistant", "content": self._plain_value(info, turn[field])})
        messages.append({"role": "user", "content": self._plain_inputs(signature, inputs)})
        return messages

    @staticmethod
    def _plain_value(info, value) -> str:
        formatted = format_field_value(field_info=info, value=value)
        return formatted if isinstance(formatted, str) else str(value)

    @classmethod
    def _plain_inputs(cls, signature, values) -> str:
        names = [k for k in signature.input_fields if k in values]
        if len(names) == 1:
            return cls._plain_value(signature.input_fields[names[0]], values[names[0]])
        return "\n".join(f"{k}: {cls._plain_value(signature.input_fields[k], values[k])}" for k in names)

    def parse(self, signature, completion):
        field = self.single_output(signature)
        if field is None:
            return super().parse(signature, completion)
        text = completion.split(STOP_MARKER)[0]
        text = re.sub(r"\[\[ ## \w+ ## \]\]", " ", text).strip()  # a model that still writes markers
        if not text:
            raise dspy.utils.exceptions.AdapterParseError(
                adapter_name="TierwiseAdapter", signature=signature, lm_response=completion,
                message="empty answer")
        annotation = field_type(signature.output_fields[field])
        base = get_args(annotation)[0] if get_args(annotation) and hasattr(annotation, "__metadata__") else annotation
        if base in _SCALAR_TYPES or choices(base):
            answer = text.splitlines()[0].strip()  # a label or a number: the first line, not the chatter
        else:  # structured: the whole JSON, fences off
            answer = re.sub(r"^```\w*\s*|\s*```$", "", text).strip()
        try:
            return {field: parse_typed(answer, annotation)}
        except Exception as e:  # noqa: BLE001 - pydantic and dspy raise several kinds; all mean "not an answer"
            raise dspy.utils.exceptions.AdapterParseError(
                adapter_name="TierwiseAdapter", signature=signature, lm_response=completion,
                message=str(e).splitlines()[0][:200]) from e

