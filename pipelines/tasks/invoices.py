"""Invoice field extraction: three predictors read the same invoice text, each of a different difficulty,
so a good policy gives each its own tier:
    vendor    copy the business name (easy: usually the first line)
    total     the final amount due, as 1249.50 (medium: subtotal/tax/deposit lines, EU number styles)
    due_date  the payment due date as ISO YYYY-MM-DD (hard: date styles, 'Net 30 from ...' arithmetic)
Metric: mean accuracy over the three fields after normalization (so formatting alone never counts
as an error: '$1,249.50', 'EUR 1.249,50' and '1249.5' are all 1249.50)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation

import dspy

NAME = "invoices"
DATASET = "invoices.jsonl"
FIELDS = ("vendor", "total", "due_date")


class ExtractVendor(dspy.Signature):
    """Copy the name of the business that issued this invoice exactly as written (without invoice
    numbers or labels)."""

    text: str = dspy.InputField(desc="invoice text")
    vendor: str = dspy.OutputField(desc="the vendor's name")


class ExtractTotal(dspy.Signature):
    """Give the final amount due on this invoice: the total after tax and shipping, or the balance
    due if a deposit was paid. Write it with two decimals, a dot as decimal separator and no currency
    sign or thousands separator, e.g. 1249.50."""

    text: str = dspy.InputField(desc="invoice text")
    total: str = dspy.OutputField(desc="amount due, e.g. 1249.50")


class ExtractDueDate(dspy.Signature):
    """Give the payment due date of this invoice as YYYY-MM-DD. If the due date is given relative to
    another date (e.g. 'Net 30 from 2024-09-23' or 'due in 14 days'), compute it. Do not confuse the
    invoice (issue) date with the due date."""

    text: str = dspy.InputField(desc="invoice text")
    due_date: str = dspy.OutputField(desc="due date as YYYY-MM-DD")


# --- normalizers: what counts as the same answer ---------------------------------------------------


def normalize_vendor(value) -> str:
    """Case, surrounding quotes/punctuation and runs of spaces do not matter; the words do."""
    text = re.sub(r"\s+", " ", str(value or "")).strip()
    return text.strip(" \"'`.,;:|~*").casefold()


_AMOUNT = re.compile(r"\d[\d.,' ]*\d|\d")


def normalize_amount(value) -> str:
    """The last amount in the text as '1249.50', reading US (1,249.50) and EU (1.249,50) styles;
    '' when there is none."""
    found = [m.group() for m in _AMOUNT.finditer(str(value or ""))]
    if not found:
        return ""
    raw = found[-1].replace(" ", "").replace("'", "")
    last_dot, last_comma = raw.rfind("."), raw.rfind(",")
    if last_dot >= 0 and last_comma >= 0:  # the later separator is the decimal one
        decimal_sep = "." if last_dot > last_comma else ","
    elif last_comma >= 0:  # 12,50 is a decimal; 1,249 is thousands
        decimal_sep = "," if len(raw) - last_comma - 1 != 3 else None
    elif last_dot >= 0:  # 1249.5 is a decimal; 1.249 is thousands (EU style)
        decimal_sep = "." if len(raw) - last_dot - 1 != 3 else None
    else:
        decimal_sep = None
    if decimal_sep is None:
        digits, fraction = re.sub(r"[.,]", "", raw), ""
    else:
        head, _, fraction = raw.rpartition(decimal_sep)
        digits = re.sub(r"[.,]", "", head)
    try:
        return f"{Decimal(f'{digits or 0}.{fraction or 0}'):.2f}"
    except InvalidOperation:
        return ""


_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_ISO = re.compile(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b")
_MONTH_FIRST = re.compile(r"\b([a-z]{3})[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b")
_DAY_FIRST = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([a-z]{3})[a-z]*\.?,?\s+(\d{4})\b")


def normalize_date(value) -> str:
    """The first unambiguous date in the text as ISO YYYY-MM-DD ('2024-10-23', 'Oct 23, 2024',
    '23rd October 2024'); '' when there is none. All-numeric day/month orders such as 10/11/2024 are
    ambiguous and are not guessed: the predictor is asked for ISO."""
    text = str(value or "").lower()
    candidates = []
    for m in _ISO.finditer(text):
        candidates.append((m.start(), int(m.group(1)), int(m.group(2)), int(m.group(3))))
    for m in _MONTH_FIRST.finditer(text):
        if m.group(1) in _MONTHS:
            candidates.append((m.start(), int(m.group(3)), _MONTHS[m.group(1)], int(m.group(2))))
    for m in _DAY_FIRST.finditer(text):
        if m.group(2) in _MONTHS:
            candidates.append((m.start(), int(m.group(3)), _MONTHS[m.group(2)], int(m.group(1))))
    for _, year, month, day in sorted(candidates):
        try:
            return date(year, month, day).isoformat()
        except ValueError:
            continue
    return ""


NORMALIZE = {"vendor": normalize_vendor, "total": normalize_amount, "due_date": normalize_date}


def field_correct(field: str, predicted, gold) -> bool:
    normalized = NORMALIZE[field](predicted)
    return bool(normalized) and normalized == NORMALIZE[field](gold)


class InvoiceReader(dspy.Module):
    def __init__(self):
        super().__init__()
        self.vendor = dspy.Predict(ExtractVendor, max_tokens=40)
        self.total = dspy.Predict(ExtractTotal, max_tokens=24)
        self.due_date = dspy.Predict(ExtractDueDate, max_tokens=24)

    def forward(self, text: str):
        return dspy.Prediction(vendor=self.vendor(text=text).vendor, total=self.total(text=text).total,
                               due_date=self.due_date(text=text).due_date)


def build_program() -> dspy.Module:
    return InvoiceReader()


def inputs(row: dict) -> dict:
    return {"text": row["text"]}


def metric(row: dict, prediction) -> float:
    return sum(field_correct(f, getattr(prediction, f), row[f]) for f in FIELDS) / len(FIELDS)


def predictor_correct(name: str, row: dict, outputs: dict) -> bool | None:
    if name not in FIELDS:  # each predictor is named after the field it extracts
        return None
    return field_correct(name, outputs.get(name), row[name])
