"""TierwiseAdapter's plain prompt says everything DSPy's ChatAdapter says about a one-output signature."""

from __future__ import annotations

import enum
import re
from typing import Literal

import dspy
import pydantic
import pytest

from pipelines.adapter import TierwiseAdapter
from pipelines.tasks import load_task

BANK = ("card_lost", "transfer_failed", "balance", "loan_rates", "close_account", "fraud_report")


class Intent(dspy.Signature):  # written the way the DSPy docs show: no description anywhere
    message: str = dspy.InputField()
    intent: Literal[BANK] = dspy.OutputField()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Invoice(pydantic.BaseModel):
    vendor: str
    total: float = pydantic.Field(description="amount due, tax included")


class ReadInvoice(dspy.Signature):
    """Read the invoice."""

    text: str = dspy.InputField(desc="the invoice as OCR text")
    currency: str = dspy.InputField()
    invoice: Invoice = dspy.OutputField(desc="what the invoice says")


class Count(dspy.Signature):
    """How many items are listed?"""

    items: list[str] = dspy.InputField()
    count: int = dspy.OutputField(desc="a whole number", ge=0)


class IsSpam(dspy.Signature):
    email: str = dspy.InputField()
    spam: bool = dspy.OutputField()


class Paint(dspy.Signature):
    request: str = dspy.InputField()
    color: Color = dspy.OutputField(desc="the colour asked for")


class Tags(dspy.Signature):
    text: str = dspy.InputField()
    tags: list[str] = dspy.OutputField()


def chat_adapter_facts(signature) -> list[str]:
    """What ChatAdapter's system message states about the fields: names, types, descriptions, each
    Literal/Enum choice, each type note, type descriptions and constraints."""
    text = dspy.ChatAdapter().format(signature, [], {k: "x" for k in signature.input_fields})[0]["content"]
    facts = []
    fields_part = text.split("All interactions")[0]
    for name, type_name, desc in re.findall(r"^\d+\. `(\w+)` \((.*)\):(.*)$", fields_part, re.M):
        facts += [f"`{name}`", desc.strip()]
        if not type_name.startswith("Literal["):
            facts.append(type_name)
    for note in re.findall(r"# note: the value you produce (.*)$", text, re.M):
        choices = re.match(r"must (?:exactly match \(no extra characters\) )?(?:be )?one of: (.*)$", note)
        facts += choices.group(1).split("; ") if choices else [note]
    facts += re.findall(r"^\s*(Type description of .*|Constraints: .*)$", fields_part, re.M)
    return [f for f in facts if f]


@pytest.mark.parametrize("signature", [Intent, ReadInvoice, Count, IsSpam, Paint, Tags])
def test_plain_prompt_states_everything_chat_adapter_states(signature):
    facts = chat_adapter_facts(signature)
    assert len(facts) >= 3
    messages = TierwiseAdapter().format(signature, [], {k: "x" for k in signature.input_fields})
    system = messages[0]["content"]
    missing = [f for f in facts if f not in system]
    assert not missing, f"{signature.__name__}: ChatAdapter states {missing}, the plain prompt does not:\n{system}"
    assert "[[ ##" not in system  # still the plain format


def test_literal_without_description_lists_every_label_once():
    system = TierwiseAdapter().format(Intent, [], {"message": "I lost my card"})[0]["content"]
    for label in BANK:
        assert system.count(label) == 1, label
    assert "`message`" in system and "`intent`" in system


def test_structured_output_carries_schema_and_parses_multiline_json():
    adapter = TierwiseAdapter()
    system = adapter.format(ReadInvoice, [], {"text": "t", "currency": "EUR"})[0]["content"]
    assert '"required": ["vendor", "total"]' in system and "amount due, tax included" in system
    parsed = adapter.parse(ReadInvoice, '```json\n{"vendor": "ACME",\n "total": 12.5}\n```')
    assert parsed["invoice"] == Invoice(vendor="ACME", total=12.5)
    with pytest.raises(dspy.utils.exceptions.AdapterParseError):
        adapter.parse(ReadInvoice, "The vendor is ACME.")


def test_scalar_outputs_parse_the_first_line_and_refuse_the_rest():
    adapter = TierwiseAdapter()
    assert adapter.parse(Count, "3\nbecause there are three") == {"count": 3}
    assert adapter.parse(Intent, "Card_lost.") == {"intent": "card_lost"}
    assert adapter.parse(Paint, "blue") == {"color": Color.BLUE}
    with pytest.raises(dspy.utils.exceptions.AdapterParseError):
        adapter.parse(Intent, "please block it")


def test_shipped_support_prompt_does_not_repeat_its_labels():
    """The support task's description already lists its labels: no second list in its prompt."""
    program = load_task("support").build_program()
    system = TierwiseAdapter().format(program.classify.signature, [], {"message": "hi"})[0]["content"]
    assert "must exactly match" not in system
    assert system.count("product_question") == 2  # the routing instructions and the field description


def test_demos_and_inputs_use_dspy_value_formatting():
    demos = [dspy.Example(items=["a", "b"], count=2)]
    messages = TierwiseAdapter().format(Count, demos, {"items": ["x"]})
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == '["a", "b"]' and messages[2]["content"] == "2"


class ChatQA(dspy.Signature):
    """Answer the user's question in the conversation."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


def test_a_history_input_is_earlier_turns_of_the_chat_as_chat_adapter_sends_it():
    """The DSPy docs' conversation history (a `dspy.History` input) was dumped into the user message as JSON
    ('history: {"messages": [...]}') beside the question. Its turns are now earlier user / assistant
    messages, after the demos and before the current input, and the field list no longer names it."""
    history = dspy.History(messages=[{"question": "What is the capital of France?", "answer": "Paris"},
                                     {"question": "And of Italy?", "answer": "Rome"}])
    demos = [dspy.Example(question="Capital of Spain?", answer="Madrid")]
    messages = TierwiseAdapter().format(ChatQA, demos, {"question": "Which is bigger?", "history": history})
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "Capital of Spain?"), ("assistant", "Madrid"),
        ("user", "What is the capital of France?"), ("assistant", "Paris"),
        ("user", "And of Italy?"), ("assistant", "Rome"), ("user", "Which is bigger?")]
    assert "history" not in messages[0]["content"].split("\n", 1)[1]  # only the default instructions name it
    # a dataset row gives it as JSON: the same turns, on the plain path and on ChatAdapter's
    as_json = {"question": "Which is bigger?", "history": history.model_dump()}
    assert TierwiseAdapter().format(ChatQA, demos, as_json) == messages
    two_outputs = ChatQA.append("source", dspy.OutputField())
    chat = TierwiseAdapter().format(two_outputs, [], as_json)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "Rome" in chat[4]["content"] and "history" not in chat[-1]["content"]
