"""Multilingual self-instruct (PolyLM's MultiAlpaca, Wei et al. 2023 sec. 3), the pure parts:
seed selection, prompts, response parsing and per-task format checks. No I/O, no Spark.

Seed selection (:func:`select_seeds`): PolyLM drops 13 of the 175 Self-Instruct seed tasks and
adapts 23 by hand, because they do not survive translation. Here the selection is a set of
ordered rules (first match wins), each with its reason, applied to the seed's name, instruction
and first input; nothing is adapted by hand. Rules (:data:`SEED_RULES`):

===================  ===========================================================================
``code``             code generation / editing, SQL, regular expressions, HTML: the input or
                     output is a program that must stay as is
``translation``      translation tasks (the language pair is the task)
``multiple_choice``  multiple choice (the A/B/C/D labels and options must stay as is)
``bias_detection``   stereotype / bias identification: English-culture specific prompts
``idiom``            idiom explanation (the idiom does not exist in the target language)
``lyrics``           song lyrics completion (the lyrics exist only in English)
``wordplay``         character- or sound-level tasks: puns, knock-knock jokes, haiku, rhymes,
                     misspellings
``english_grammar``  English linguistic annotation whose input must stay as is: POS tags,
                     dependency parses, grammaticality, collocations, "ends with the word"
===================  ===========================================================================

Prompt (:func:`build_prompt`): the Alpaca/Self-Instruct generation prompt, in PolyLM's form: 2
random seed tasks and 1 task generated earlier are shown as tasks 1-3 and the model writes
tasks 4-20 (17 new). Every block is ``###``-separated::

    ###
    4. Instruction: ...
    4. Input:
    ...
    4. Output:
    ...

Format checks (:func:`check_task`), each drop with its reason: the last task of a response cut
at the length limit (``cut_by_length_limit``), a missing part (``missing_part``), an empty
instruction or output (``empty``), an instruction of <= 3 or > 150 words, counted with
:func:`filters.words.words` (``too_short`` / ``too_long``; Alpaca's ``generate_instruction.py``
bounds), an input or output over 2,000 words (``too_long``), and a language other than the
requested one by fastText LID (``wrong_language``; :class:`filters.langid.LangID`).
"""
from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from filters.words import words

__all__ = ["SEED_RULES", "LANG_NAMES", "NUM_PROMPT_SEEDS", "NUM_PROMPT_GENERATED", "NUM_NEW_TASKS",
           "Task", "load_seeds", "seed_drop_reason", "select_seeds", "build_prompt",
           "translation_prompt", "parse_response", "check_task", "DROP_REASONS",
           "MIN_INSTRUCTION_WORDS", "MAX_INSTRUCTION_WORDS", "MAX_FIELD_WORDS", "sample_examples"]

#: PolyLM sec. 3: each prompt shows 2 seed tasks and 1 generated task and asks for 17 more.
NUM_PROMPT_SEEDS = 2
NUM_PROMPT_GENERATED = 1
NUM_NEW_TASKS = 17
#: Alpaca generate_instruction.py: instructions of <= 3 or > 150 words are dropped.
MIN_INSTRUCTION_WORDS = 4
MAX_INSTRUCTION_WORDS = 150
#: Our bound on an input or output (words): longer ones are runaway generations.
MAX_FIELD_WORDS = 2000

#: Every reason a generated task can be dropped by the format checks (stats keys).
DROP_REASONS = ("cut_by_length_limit", "missing_part", "empty", "too_short", "too_long",
                "wrong_language", "unparsable")

#: English names of the 18 project languages (used inside prompts).
LANG_NAMES = {"zh": "Chinese", "en": "English", "ru": "Russian", "es": "Spanish",
              "fr": "French", "pt": "Portuguese", "de": "German", "it": "Italian",
              "nl": "Dutch", "pl": "Polish", "ar": "Arabic", "tr": "Turkish", "he": "Hebrew",
              "ja": "Japanese", "ko": "Korean", "th": "Thai", "vi": "Vietnamese",
              "id": "Indonesian"}

_I = re.IGNORECASE
#: (reason, regex over "name | instruction | first input"), first match wins (module docstring).
SEED_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("code", re.compile(r"\b(python|javascript|code|program|sql|regular expression|html|script)\b"
                        r"|\bdef \w+\(|^import \w", _I | re.M)),
    ("translation", re.compile(r"\btranslat", _I)),
    ("multiple_choice", re.compile(r"multiple.choice|select a, b, c", _I)),
    ("bias_detection", re.compile(r"stereotype|\b(identify|detect|analy[sz]e)\b[^|]*\bbias", _I)),
    ("idiom", re.compile(r"\bidiom", _I)),
    ("lyrics", re.compile(r"\blyric", _I)),
    ("wordplay", re.compile(r"\bpuns?\b|knock.knock|haiku|\brhym|misspell|spelling", _I)),
    ("english_grammar", re.compile(r"\bpos.tags?\b|dependency.pars|\bgrammatical\b|collocation"
                                   r"|ends with the word", _I)),
)


@dataclass
class Task:
    """One instruction task. ``input`` may be empty (no-input task); ``seed_ids`` lists the
    seed tasks shown in the prompt that produced it (the seed's own id for a seed)."""

    instruction: str
    input: str
    output: str
    seed_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict of the four fields."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output,
                "seed_ids": list(self.seed_ids)}


def load_seeds(lines: Iterable[str]) -> tuple[list[dict], list[dict]]:
    """Parse Self-Instruct ``seed_tasks.jsonl`` lines.

    Returns:
        (seeds, bad): seeds as dicts with ``id, name, instruction, input, output``
        (first instance); bad lines as ``{"line": n, "reason": ...}`` records (never raised).
    """
    seeds, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            inst = d["instances"][0]
            seeds.append({"id": str(d["id"]), "name": str(d.get("name", "")),
                          "instruction": str(d["instruction"]).strip(),
                          "input": str(inst.get("input", "")).strip(),
                          "output": str(inst["output"]).strip()})
        except (ValueError, KeyError, IndexError, TypeError) as e:
            bad.append({"line": n, "reason": f"bad_seed_record: {type(e).__name__}: {e}"})
    return seeds, bad


def seed_drop_reason(seed: dict) -> tuple[str, str] | None:
    """``(reason, matched text)`` of the first :data:`SEED_RULES` rule the seed matches, or
    ``None`` when the seed translates."""
    text = f"{seed.get('name', '')} | {seed.get('instruction', '')} | {seed.get('input', '')}"
    for reason, rx in SEED_RULES:
        m = rx.search(text)
        if m:
            return reason, m.group(0)
    return None


def select_seeds(seeds: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Split seeds into (kept, dropped); each dropped record is ``{"id", "name", "reason",
    "matched"}``."""
    kept, dropped = [], []
    for s in seeds:
        r = seed_drop_reason(s)
        if r is None:
            kept.append(s)
        else:
            dropped.append({"id": s["id"], "name": s.get("name", ""), "reason": r[0],
                            "matched": r[1][:80]})
    return kept, dropped


def _block(k: int, t: dict | Task) -> str:
    d = t.to_dict() if isinstance(t, Task) else t
    inp = d.get("input") or "<noinput>"
    return f"###\n{k}. Instruction: {d['instruction']}\n{k}. Input:\n{inp}\n{k}. Output:\n{d['output']}\n"


def build_prompt(lang: str, examples: Sequence[dict | Task], n_new: int = NUM_NEW_TASKS) -> str:
    """The generation prompt for language ``lang`` (ISO 639-1) showing ``examples`` (PolyLM: 2
    seeds + 1 generated) as tasks 1..k and asking for ``n_new`` more, numbered from k+1.

    Raises:
        KeyError: ``lang`` is not one of :data:`LANG_NAMES`.
    """
    name = LANG_NAMES[lang]
    total = len(examples) + n_new
    head = (
        f"You are asked to come up with a set of {total} diverse task instructions in {name}. "
        f"These task instructions will be given to a language model and we will evaluate the "
        f"model for completing the instructions.\n\n"
        f"Here are the requirements:\n"
        f"1. Try not to repeat the verb for each instruction to maximize diversity.\n"
        f"2. The language used for the instruction also should be diverse.\n"
        f"3. The type of instructions should be diverse: open-ended generation, classification, "
        f"editing, question answering, reasoning, and so on.\n"
        f"4. Instructions, inputs and outputs must all be written in {name}.\n"
        f"5. Not all instructions require input; then write \"<noinput>\" in the input field.\n"
        f"6. The output should be an appropriate response to the instruction and the input.\n\n"
        f"List of {total} tasks:\n")
    body = "".join(_block(i + 1, t) for i, t in enumerate(examples))
    return head + body + f"###\n{len(examples) + 1}. Instruction:"


def translation_prompt(lang: str, seed: dict) -> str:
    """Prompt asking to translate one seed task into ``lang``, answered in the task format
    (parsed by :func:`parse_response`). Raises ``KeyError`` for an unknown ``lang``."""
    name = LANG_NAMES[lang]
    return (f"Translate the following task (instruction, input and output) from English into "
            f"{name}. Keep the format exactly: the same numbered fields, <noinput> when there is "
            f"no input.\n\n" + _block(1, seed) + "###\n")


_FIELD_RE = re.compile(r"^\s*(\d+)\s*\.\s*(Instruction|Input|Output)\s*:", re.M | re.I)


def parse_response(text: str, finish_reason: str | None, first_number: int | None = None
                   ) -> tuple[list[Task], list[tuple[str, str]]]:
    """Split a generator response into tasks.

    Args:
        text: the completion (may start in the middle of the first task's instruction when
            the prompt ended with ``"N. Instruction:"``; ``first_number`` = N then).
        finish_reason: the backend's finish reason; ``"length"`` means the response was cut at
            the token limit, so its last task is dropped (``cut_by_length_limit``).
        first_number: number of the task the prompt opened, or None; prepended as
            ``"N. Instruction:"`` unless the text starts with ``###`` or a numbered instruction
            (chat models often restart the block).

    Returns:
        (tasks, drops): parsed tasks (fields stripped; ``<noinput>`` -> ``""``) and one
        ``(reason, raw block)`` per dropped block (``missing_part``, ``cut_by_length_limit``,
        ``unparsable``). Empty fields are kept here and dropped by :func:`check_task`.
    """
    if first_number is not None and not re.match(r"\s*(###|\d+\s*\.\s*Instruction\s*:)", text, re.I):
        text = f"{first_number}. Instruction:" + text
    blocks = [b for b in re.split(r"^\s*###\s*$|###", text, flags=re.M) if b.strip()]
    parsed: list[tuple[Task | None, str, str]] = []
    for b in blocks:
        fields: dict[str, str] = {}
        marks = list(_FIELD_RE.finditer(b))
        if not marks:
            parsed.append((None, "unparsable", b))
            continue
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(b)
            key = m.group(2).lower()
            if key not in fields:
                fields[key] = b[m.end():end].strip()
        if not {"instruction", "input", "output"} <= fields.keys():
            parsed.append((None, "missing_part", b))
            continue
        inp = fields["input"]
        if inp.strip().lower() in ("<noinput>", "<no input>", "noinput", "<无输入>"):
            inp = ""
        parsed.append((Task(fields["instruction"], inp, fields["output"]), "", b))
    drops = []
    if finish_reason == "length" and parsed:
        _, _, b = parsed.pop()
        drops.append(("cut_by_length_limit", b))
    tasks = []
    for t, reason, b in parsed:
        if t is None:
            drops.append((reason, b))
        else:
            tasks.append(t)
    return tasks, drops


def check_task(task: Task, lang: str, detected_lang: str | None = None) -> str | None:
    """Format checks of one parsed task (module docstring); returns the drop reason or None.

    Args:
        task: the parsed task.
        lang: requested ISO 639-1 code (word counting uses its segmenter).
        detected_lang: fastText LID of ``instruction + input + output`` (None skips the check;
            the caller batches LID over many tasks).
    """
    if not task.instruction.strip() or not task.output.strip():
        return "empty"
    n = len(words(task.instruction, lang))
    if n < MIN_INSTRUCTION_WORDS:
        return "too_short"
    if n > MAX_INSTRUCTION_WORDS or len(words(task.input, lang)) > MAX_FIELD_WORDS \
            or len(words(task.output, lang)) > MAX_FIELD_WORDS:
        return "too_long"
    if detected_lang is not None and detected_lang != lang:
        return "wrong_language"
    return None


def sample_examples(rng: random.Random, seeds: Sequence[dict], generated: Sequence[dict]
                    ) -> list[dict]:
    """PolyLM's in-context examples: :data:`NUM_PROMPT_SEEDS` random seeds and
    :data:`NUM_PROMPT_GENERATED` random generated task (a third seed while none exists yet)."""
    k = NUM_PROMPT_SEEDS + (0 if generated else NUM_PROMPT_GENERATED)
    ex = rng.sample(list(seeds), min(k, len(seeds)))
    if generated:
        ex += rng.sample(list(generated), NUM_PROMPT_GENERATED)
    return ex
