"""Prompt-injection screening, offline: normalise away obfuscation, then score weighted signals.

Normalisation undoes what attackers use to slip past keyword lists: compatibility forms (NFKC), zero-width
and tag characters, homoglyphs from Cyrillic and Greek, leetspeak, letters spaced or dotted apart, and
instructions hidden in base64. The score combines the matched signals' weights as independent evidence
(1 - prod(1 - w)); each signal is a phrase shape that instructions to a model have and ordinary requests
that merely mention the same words ("how do I ignore a file in git") do not.
"""

from __future__ import annotations

import base64
import binascii
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from importlib import resources

_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f"
                        "\u3164\ufe00-\ufe0f\ufeff\U000e0000-\U000e007f]")
_CONFUSABLES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "с": "c", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԝ": "w",
    "ь": "b", "г": "r", "п": "n", "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "І": "I", "Ј": "J",
    "К": "K", "М": "M", "О": "O", "Р": "P", "Ѕ": "S", "Т": "T", "Х": "X", "У": "Y",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Χ": "X", "Υ": "Y", "Ζ": "Z",
    # Latin look-alikes and punctuation
    "ı": "i", "ɩ": "i", "ɡ": "g", "ʀ": "r", "ᴀ": "a", "ᴇ": "e", "ᴏ": "o", "ꜱ": "s", "ᴛ": "t", "ɪ": "i",
    "‘": "'", "’": "'", "“": '"', "”": '"', "‐": "-", "‑": "-", "–": "-", "—": "-",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "|": "i",
                       "!": "i", "+": "t"})
_LEET_WORD = re.compile(r"\b(?=[\w@$|!+]*[a-z])(?=[\w@$|!+]*[013457@$|!+])[\w@$|!+]{3,}\b")
_SPACED = re.compile(r"\b(?:[a-z][ ._*\-]){3,}[a-z]\b")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_WS = re.compile(r"[^\S\n]+")


def normalise(text: str) -> str:
    """Lower-case text with obfuscation undone (the views the signals match against, joined)."""
    plain = unicodedata.normalize("NFKC", text)
    plain = _INVISIBLE.sub("", plain).translate(_CONFUSABLES)
    plain = unicodedata.normalize("NFKD", plain)
    plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()
    plain = _SPACED.sub(lambda m: re.sub(r"[ ._*\-]", "", m.group()), plain)
    plain = _LEET_WORD.sub(lambda m: m.group().translate(_LEET), plain)
    return _WS.sub(" ", plain)


def decoded_fragments(text: str) -> list[str]:
    """Readable text hidden in base64 runs of `text` (each decoded fragment, normalised)."""
    found = []
    for m in _BASE64.finditer(text):
        chunk = m.group()
        try:
            raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if len(decoded) >= 8 and sum(c.isprintable() or c.isspace() for c in decoded) >= 0.95 * len(decoded):
            found.append(normalise(decoded))
    return found




def load_signals() -> tuple[tuple[str, float, re.Pattern[str]], ...]:
    """The signal table shipped in signals.toml (name, weight, compiled pattern)."""
    table = tomllib.loads(resources.files("garrison.guard").joinpath("signals.toml").read_text("utf-8"))
    macros: dict[str, str] = table["macros"]
    signals = []
    for entry in table["signal"]:
        pattern: str = entry["pattern"]
        for name, value in macros.items():
            pattern = pattern.replace(f"<{name}>", value)
        signals.append((str(entry["name"]), float(entry["weight"]), re.compile(pattern)))
    return tuple(signals)


_SIGNALS = load_signals()


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """The screening outcome: a score in [0, 1] and the names of the signals behind it."""

    score: float
    signals: tuple[str, ...]


def screen(text: str) -> InjectionResult:
    """Score `text` for prompt injection (direct, or indirect inside a document) across its normal forms."""
    views = [normalise(text)]
    views.extend(decoded_fragments(text))
    obfuscated = bool(_INVISIBLE.search(text)) or _mixed_script(text)
    weights: dict[str, float] = {}
    for index, view in enumerate(views):
        for name, weight, pattern in _SIGNALS:
            if name in weights and weights[name] >= weight:
                continue
            if pattern.search(view):
                weights[name] = weight
                if index > 0:
                    weights["encoded_payload"] = 0.6
    if obfuscated and weights:
        weights["obfuscation"] = 0.5
    score = 1.0
    for weight in weights.values():
        score *= 1.0 - weight
    return InjectionResult(round(1.0 - score, 4), tuple(sorted(weights)))


_LOOKALIKE = "[\u0370-\u03ff\u0400-\u04ff]"
_LATIN_WORD_WITH_LOOKALIKE = re.compile(rf"[a-zA-Z]+{_LOOKALIKE}+[a-zA-Z]*|{_LOOKALIKE}+[a-zA-Z]+")


def _mixed_script(text: str) -> bool:
    """Latin letters mixed with Cyrillic or Greek inside one word: the mark of homoglyph obfuscation."""
    return bool(_LATIN_WORD_WITH_LOOKALIKE.search(text))
