"""Final answers of math solutions: extraction and normalisation for exact match.

Gold answers and model outputs go through the same functions, so they compare alike:

- GSM8K: the number after ``####`` (:func:`extract_gsm8k_answer`), commas removed;
- MATH: the last ``\\boxed{...}`` (:func:`extract_boxed_answer`), nested braces allowed;
- SVAMP and free text: the last number (:func:`extract_last_number`);
- MetaMathQA-trained models on MATH: ``The answer is: ...`` where they wrote no box
  (:func:`extract_stated_answer`);
- :func:`normalize_answer` makes ``"1,000"``, ``"1000.00"`` and ``"$1000$"`` equal, and
  applies the usual light LaTeX clean-up for MATH (``\\dfrac`` -> ``\\frac``, ``\\left``,
  units in ``\\text{}``, spaces), a subset of Hendrycks et al.'s ``is_equiv``.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_BOXED = ("\\boxed", "\\fbox")
#: GSM8K's answer line: ``#### 1,080``, ``#### $18.00``, ``#### -3``.
_GSM8K_ANSWER = re.compile(r"####\s*\$?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+)")
#: A number with thousands separators: the only commas a number may hold.
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def normalize_number(text: str) -> str:
    """A number in one canonical spelling (``"1,000.50"`` -> ``"1000.5"``); other text stripped.

    Removes thousands separators, ``$``, spaces and a trailing full stop (other commas
    make it a list, left as it is); an integral value loses its
    decimals (``"18.0"`` -> ``"18"``); others keep at most 6 decimals. Text that is not a
    number comes back stripped but otherwise unchanged.
    """
    cleaned = text.strip().replace("$", "").replace(" ", "").rstrip(".")
    if "," in cleaned:
        if not _THOUSANDS.fullmatch(cleaned):
            return text.strip()  # a list ("0,1", "-4, 4"), not one number: never "1" or "-44"
        cleaned = cleaned.replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return text.strip()
    if value != value or value in (float("inf"), float("-inf")):
        return text.strip()
    value = round(value, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    if value.is_integer():
        return str(int(value))
    return format(value, "f").rstrip("0").rstrip(".")


def extract_gsm8k_answer(text: str) -> str | None:
    """The answer after GSM8K's ``####`` marker, normalised; ``None`` without a marker."""
    if "####" not in text:
        return None
    # The first "#### <number>", as lm-eval's strict match: a generation that runs on past
    # its answer into an invented problem ("#### 18\n\nQuestion: ... #### 5") is scored on
    # 18, and a Markdown heading ("#### Step 1: add") is no answer.
    found = _GSM8K_ANSWER.search(text)
    if found is not None:
        return normalize_number(found.group(1)) or None
    lines = text.split("####", 1)[1].strip().splitlines()
    answer = lines[0].strip() if lines else ""
    number = _NUMBER.search(answer)
    # "#### $18 dollars" -> "18": keep the number when the line has more than one word.
    return normalize_number(number.group(0) if number else answer) or None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (``-3``, ``1,000``, ``.5``), normalised; ``None`` if none."""
    matches = _NUMBER.findall(text)
    return normalize_number(matches[-1]) if matches else None


def extract_boxed_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``); ``None`` if none.

    Braces nest (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``); ``\\boxed 5`` (no braces)
    gives ``5``; an unclosed box gives ``None``.
    """
    start, marker = max((text.rfind(marker), marker) for marker in _BOXED)
    if start < 0:
        return None
    rest = text[start + len(marker) :]
    if rest.lstrip().startswith("{"):
        rest = rest.lstrip()
    elif rest.startswith(" "):
        words = rest.split("$")[0].split()
        return words[0] if words else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i].strip()
    return None


_STATED = re.compile(r"the answer is:?", re.IGNORECASE)


def extract_stated_answer(text: str) -> str | None:
    """What follows the last ``The answer is:`` (MetaMathQA's ending) on its line, without
    the final full stop; ``None`` if there is none."""
    parts = _STATED.split(text)
    if len(parts) < 2:
        return None
    lines = parts[-1].strip().splitlines()
    answer = lines[0].strip().removesuffix(".").strip().strip("$").strip() if lines else ""
    return answer or None


def _fix_fracs(text: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1b`` -> ``\\frac{1}{b}``."""
    parts = text.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
            continue
        a, b, rest = part[0], part[1], part[2:]
        out += "{" + a + "}" + (b + rest if b == "{" else "{" + b + "}" + rest)
    return out


def _fix_sqrt(text: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}``."""
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)


def normalize_math_answer(text: str) -> str:
    """A light LaTeX normalisation of a MATH answer (spaces, fractions, units, ``x =``)."""
    s = text.strip().replace("\n", "").replace("\\!", "")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    # "10 \\text{ cm}" -> "10"; "\\text{Monday}" -> "Monday".
    s = re.sub(r"(.+?)\s*\\(?:text|mbox)\{\s*[A-Za-z ]+\}$", r"\1", s)
    s = re.sub(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}", r"\1", s)
    # "x = 5" -> "5", but only for a short left side (not "a = b" answers generally).
    left, eq, right = s.partition("=")
    if eq and "=" not in right and len(left.strip()) <= 2:
        s = right
    s = _fix_sqrt(s).replace(" ", "")
    s = _fix_fracs(s)
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if m:
        s = f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    if s.startswith("."):
        s = "0" + s
    return s


def normalize_answer(text: str | None) -> str | None:
    """What exact match compares: LaTeX clean-up, then number normalisation."""
    if text is None:
        return None
    return normalize_number(normalize_math_answer(text))
