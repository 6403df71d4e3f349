"""Fill-in-the-middle prompts: each family's own layout, found from GGUF FIM tokens or the model's name."""

from __future__ import annotations

from dataclasses import dataclass

from garrison.engines.gguf import GgufModel
from garrison.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class FimTemplate:
    """How one model family lays out a fill-in-the-middle prompt."""

    family: str
    layout: str  # a str.format pattern over {prefix} and {suffix}
    prefix_token: str  # the family's FIM prefix token, as its GGUF spells it (minus SentencePiece's ▁)
    name_keywords: tuple[tuple[str, ...], ...]  # any one group, all words present in the name, selects it

    def render(self, prefix: str, suffix: str) -> str:
        return self.layout.format(prefix=prefix, suffix=suffix)


FAMILIES: tuple[FimTemplate, ...] = (
    FimTemplate(
        family="qwen2.5-coder",
        layout="<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
        prefix_token="<|fim_prefix|>",
        name_keywords=(("qwen", "coder"),),
    ),
    FimTemplate(
        family="starcoder2",
        layout="<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
        prefix_token="<fim_prefix>",
        name_keywords=(("starcoder",),),
    ),
    FimTemplate(
        family="codellama",
        layout="<PRE> {prefix} <SUF>{suffix} <MID>",
        prefix_token="<PRE>",
        name_keywords=(("codellama",), ("code", "llama")),
    ),
    FimTemplate(
        family="codestral",
        layout="[SUFFIX]{suffix}[PREFIX]{prefix}",
        prefix_token="[PREFIX]",
        name_keywords=(("codestral",),),
    ),
    FimTemplate(
        family="deepseek-coder",
        layout="<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",
        prefix_token="<｜fim▁begin｜>",
        name_keywords=(("deepseek", "coder"),),
    ),
)


def _token(piece: str) -> str:
    """A token's text without SentencePiece's word-start marker (CodeLlama's '▁<PRE>' is '<PRE>')."""
    return (piece[1:] if piece.startswith("▁") else piece).strip()


def _literal(text: str) -> str:
    """Text that str.format reproduces as is."""
    return text.replace("{", "{{").replace("}", "}}")


def name_words(info: GgufModel) -> set[str]:
    """Lower-case words of the model's id, GGUF name/basename and architecture."""
    names = [info.id, info.architecture or ""]
    names += [str(info.metadata.get(key, "")) for key in ("general.name", "general.basename")]
    text = " ".join(names).lower()
    for sep in "-_./:":
        text = text.replace(sep, " ")
    words = set(text.split())
    # "CodeLlama-7b" and "starcoder2" are single words: also keep the words they start with.
    words |= {w.rstrip("0123456789") for w in words}
    return words


def fim_template(info: GgufModel) -> FimTemplate | None:
    """A model's FIM layout: by its GGUF FIM tokens (known family, else generic PSM), else by family name."""
    if info.fim is not None:
        declared = _token(info.fim.prefix)
        for family in FAMILIES:
            if declared == family.prefix_token:
                return family
        fim = info.fim
        layout = f"{_literal(fim.prefix)}{{prefix}}{_literal(fim.suffix)}{{suffix}}{_literal(fim.middle)}"
        return FimTemplate(family="gguf", layout=layout, prefix_token=declared, name_keywords=())
    words = name_words(info)
    for family in FAMILIES:
        if any(all(k in words for k in group) for group in family.name_keywords):
            return family
    return None


def supports_fim(info: GgufModel) -> bool:
    return fim_template(info) is not None


def fim_prompt(info: GgufModel, prefix: str, suffix: str) -> str:
    """The prompt asking `info`'s model for the text between `prefix` and `suffix` (400 if it cannot)."""
    template = fim_template(info)
    if template is None:
        raise InvalidRequest(
            f'model "{info.id}" does not support insert (fill-in-the-middle): its GGUF declares no FIM '
            "tokens and it is not a known FIM family; add a code model such as Qwen2.5-Coder, CodeLlama, "
            "Codestral, StarCoder2 or DeepSeek-Coder with `garrison models add`",
            param="suffix",
            code="fim_not_supported",
        )
    return template.render(prefix, suffix)
