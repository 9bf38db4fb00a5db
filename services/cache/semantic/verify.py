"""Does a cached question answer this one? The verifier behind the semantic tier.

Cosine similarity of sentence embeddings finds candidates, but it cannot tell "is" from "is not",
2 from 3, Python from Java or "A beat B" from "B beat A": all of those score above 0.9 with
MiniLM. So a candidate is served only when the two questions say the same thing word for word,
up to what a rewording may change:

- word forms ("dicts"/"dictionary", "isn't"/"is not"), casing and punctuation;
- words that carry no question of their own ("please", "way", "possible", "able to"...);
- a small lexicon of synonyms common in questions ("biggest"/"largest", "quit"/"exit").

Everything that makes another question is compared exactly: negations, numbers (digits and words),
months, days and other dates, units, names (capitalized anywhere in either question), the question
words ("why" is not "when"; "how many" is not "how much"), and the words the prepositions
attach ("from X to Y" is not "from Y to X"). Two questions with the same content words in another
order are refused: most such pairs are role swaps, and a refused paraphrase costs one provider
call while a wrong hit serves a wrong answer. A content word on one side only refuses the hit.

Precision first, by design: the measured wrong-hit rate is in docs/cache.md.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

__all__ = ["Parsed", "Verdict", "parse", "verify"]


def _ordered(text: str) -> list[str]:
    return text.split()


def _words(text: str) -> frozenset[str]:
    return frozenset(_ordered(text))


_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"), (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"), (re.compile(r"\bain't\b"), "is not"),
    (re.compile(r"\bshan't\b"), "shall not"), (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"), (re.compile(r"'m\b"), " am"), (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"), (re.compile(r"'d\b"), " would"),
    (re.compile(r"\b(what|where|who|how|when|why|it|that|there|here|he|she)'s\b"), r"\1 is"),
]
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?%?|[a-z]+(?:-[a-z]+)*(?:'s)?|%|\$|€|£")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*")
_SPELLINGS = {"wi-fi": "wifi", "e-mail": "email", "log-in": "login", "sign-in": "signin", "set-up": "setup"}
_UNSTEMMED = _words("does goes is was has this its us yes gas bus plus always news series species perhaps "
                    "less across whereas thus status analysis basis physics mathematics")

_NEGATIONS = _words("not no never none nothing nobody neither nor without")
_WH = frozenset({"what", "why", "how", "when", "where", "who", "whom", "whose", "which"})
_HOW_X = frozenset({"many", "much", "long", "old", "far", "often", "big", "tall", "fast", "early", "late",
                    "high", "deep", "large", "small", "hot", "cold", "soon"})
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_ordered(
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty")) if w != "_"}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                      "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1e6",
                      "billion": "1e9", "half": "0.5", "dozen": "12", "twice": "2x", "once": "1x",
                      "single": "1", "double": "2x", "triple": "3x", "both": "2"})
_ORDINALS = {w: f"{i}th" for i, w in enumerate(
    _ordered("_ first second third fourth fifth sixth seventh eighth ninth tenth")) if w != "_"}
# Words that pin a question to a time, an amount or a direction: never dropped, never a synonym.
_CRITICAL = _words(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday weekday weekend today tomorrow yesterday tonight "
    "morning afternoon evening night daily weekly monthly yearly annual spring summer autumn fall winter "
    "last next previous past future current early late before after since until ago "
    "christmas easter thanksgiving eve "
    "gram kilogram kg ounce oz pound lb mile km kilometer meter metre feet foot yard inch cm centimeter mm "
    "millimeter liter litre ml milliliter gallon quart pint cup teaspoon tablespoon celsius fahrenheit "
    "kelvin watt amp volt byte kb mb gb tb kilobyte megabyte gigabyte terabyte second minute hour day week "
    "month year decade century dollar euro yen cent percent % $ € £ usd eur gbp "
    "more less most least max maximum min minimum best worst first last only all every any some "
    # advice or obligation is another question than ability or procedure ("should I" / "can I")
    "should must ought"
)
# Pairs that embeddings put close together and that mean opposite things: never equal.
_WORD_CLASSES = {
    # a word and the word it may be replaced by in a paraphrase (same meaning in a question)
    "biggest": "largest", "big": "large", "bigger": "larger", "quickest": "fastest", "quick": "fast",
    "quickly": "fast", "rapidly": "fast", "quit": "exit", "leave": "exit", "centre": "center",
    "dict": "dictionary", "int": "integer", "str": "string", "reach": "contact", "make": "create",
    "generate": "create", "cost": "price", "purchase": "buy", "obtain": "get", "receive": "get",
    "begin": "start", "commence": "start", "allowed": "allow", "permitted": "allow", "ok": "okay",
    "travel": "go", "visit": "go", "deliver": "ship", "delivery": "shipping", "wi": "wifi", "fi": "",
    "email": "email", "e": "", "mail": "mail", "necktie": "tie", "photo": "picture", "pic": "picture",
    "author": "write", "wrote": "write", "written": "write", "writer": "write", "painter": "paint",
    "painted": "paint", "inventor": "invent", "invented": "invent", "meaning": "mean", "means": "mean",
    "spelling": "spell", "compounding": "compound", "gonna": "go", "wanna": "want",
}
# Words a rewording adds or drops without changing the question.
_LIGHT = _words(
    "a an the i me my mine we us our you your yours it its this that these those there here is are was were "
    "be been being am do does did doing done can could would will shall might may have has had "
    "having to of in on at for with by about as into from than then so and or but if "
    "please pls way ways possible able know tell want anyone someone somebody really actually "
    "exactly just simply properly correct correctly usually usual typical typically normally generally "
    "process thing things get got getting go going good proper right "
    "there's let lets like option options method methods instructions steps step procedure okay alright"
)
_DIRECTIONAL = frozenset({"from", "to", "into", "than", "vs", "versus", "instead", "over", "against", "per",
                          "for", "in", "on", "with", "without", "of", "at", "after", "before"})


def _stem(word: str) -> str:
    if word.endswith("'s"):
        word = word[:-2]
    word = _SPELLINGS.get(word, word)
    if word in _UNSTEMMED:
        return word
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _number(tok: str) -> str | None:
    if tok[0].isdigit():
        return tok.replace(",", "").rstrip("%")
    if tok in _NUMBER_WORDS:
        return _NUMBER_WORDS[tok]
    return _ORDINALS.get(tok)


# "what is the best way to" asks how; "what time" when; "what is the reason" why.
_WHAT_MEANS = {"way": "how", "time": "when", "reason": "why", "place": "where", "date": "when", "day": "when"}
_WHAT_FILLER = frozenset({"is", "are", "the", "a", "best", "good", "right", "easiest", "proper", "correct"})


@dataclass(frozen=True, slots=True)
class Parsed:
    tokens: frozenset[str]  # every normalized word
    content: tuple[str, ...]  # content words, in order (light words out, synonyms mapped)
    negations: int
    numbers: tuple[str, ...]
    wh: frozenset[str]
    names: tuple[str, ...]  # lower-cased words written with a capital past the first word, in order
    critical: tuple[str, ...]
    compounds: frozenset[tuple[str, str]]  # content words written next to each other ("git branch")
    coordinated: bool  # "or", "and", "vs" or a comma: the order of what they join may matter
    # preposition -> the words it attaches (the next word that is not light): "from X to Y"
    attachments: dict[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Verdict:
    same: bool
    reason: str = ""  # why not: negation, number, question word, name, critical word, content word, order, role


def _question_word(toks: list[str], i: int) -> tuple[str, int]:
    """The question word at ``i`` and the index of a word it takes with it ("how *many*",
    "what *time*"; -1: none)."""
    t, nxt = toks[i], toks[i + 1] if i + 1 < len(toks) else ""
    if t == "how" and nxt in _HOW_X:
        return f"how {nxt}", i + 1
    if t in ("what", "which"):
        for j in range(i + 1, min(i + 5, len(toks))):
            if toks[j] in _WHAT_MEANS:
                return _WHAT_MEANS[toks[j]], j
            if toks[j] not in _WHAT_FILLER:
                break
        return "what", -1
    return t, -1


def parse(text: str) -> Parsed:
    raw = text.strip()
    names = tuple(
        _SPELLINGS.get(w.lower(), w.lower()) for i, w in enumerate(_WORD.findall(raw))
        if i > 0 and w != "I" and any(c.isupper() for c in w)
    )
    low = raw.lower().replace("\u2019", "'")
    for pattern, repl in _CONTRACTIONS:
        low = pattern.sub(repl, low)
    raw_toks = _TOKEN.findall(low)
    # Names are not stemmed: "HTTPS" is not "HTTP".
    unstemmed = set(names)
    toks = [_SPELLINGS.get(t, t) if _SPELLINGS.get(t, t) in unstemmed else _stem(t) for t in raw_toks]
    wh: set[str] = set()
    numbers: list[str] = []
    critical: list[str] = []
    content: list[str] = []
    attach: dict[str, set[str]] = {}
    negations = 0
    pending: list[str] = []  # prepositions waiting for the word they attach
    compounds: set[tuple[str, str]] = set()
    last_content = -2  # index of the previous content word
    taken: set[int] = set()  # words a question word took with it
    for i, t in enumerate(toks):
        if i in taken:
            continue
        if t in _NEGATIONS:
            negations += 1
            continue
        if t in _WH:
            q, with_word = _question_word(toks, i)
            wh.add(q)
            taken.add(with_word)
            continue
        if t in _DIRECTIONAL:
            pending.append(t)
            continue
        n = _number(t)
        word = n if n is not None else _WORD_CLASSES.get(t, t)
        if not word or (n is None and t not in _CRITICAL and (raw_toks[i] in _LIGHT or word in _LIGHT)):
            continue
        for p in pending:
            attach.setdefault(p, set()).add(word)
        pending = []
        if n is not None:
            numbers.append(n)
        elif t in _CRITICAL:
            critical.append(t)
        else:
            if last_content == i - 1:
                compounds.add((content[-1], word))
            content.append(word)
            last_content = i
    wh.discard("what")  # "capital of Australia?" asks what it is: "what" and no question word are one
    return Parsed(tokens=frozenset(toks), content=tuple(content), negations=negations, numbers=tuple(sorted(numbers)),
                  wh=frozenset(wh), names=names, critical=tuple(sorted(critical)),
                  compounds=frozenset(compounds), coordinated=bool(re.search(r",|\b(or|and|vs|versus|nor)\b", low)),
                  attachments={p: frozenset(w) for p, w in attach.items()})


def _names_agree(a: Parsed, b: Parsed) -> bool:
    """A name written in either question must be in both (as a word: casing may differ), and two
    names both questions share must come in the same order ("Federer beat Nadal")."""
    if not all(n in b.tokens for n in a.names) or not all(n in a.tokens for n in b.names):
        return False
    shared = [n for n in a.names if n in b.names]
    return shared == [n for n in b.names if n in shared]


def _roles_swapped(a: Parsed, b: Parsed) -> bool:
    """Same words, other roles: a preposition attaching X in one and Y in the other with both in
    each ("from dollars to euros" / "from euros to dollars"), two words trading places ("cats hate
    dogs" / "dogs hate cats"), or the parts of a list or a choice reordered. A block moved whole
    ("is it safe to eat raw eggs" / "are raw eggs safe to eat") or a compound turned around ("git
    branch" / "branch in git") is a rewording."""
    shared = a.tokens & b.tokens
    for p in a.attachments.keys() & b.attachments.keys():
        only_a = (a.attachments[p] - b.attachments[p]) & shared
        only_b = (b.attachments[p] - a.attachments[p]) & shared
        if only_a and only_b:
            return True
    x, y = a.content, b.content
    if x == y:
        return False
    if a.coordinated or b.coordinated:
        return True  # "is a tomato a fruit or a vegetable" / "is a vegetable a tomato or a fruit"
    moved = [i for i in range(len(x)) if x[i] != y[i]]
    if len(moved) != 2 or x[moved[0]] != y[moved[1]] or x[moved[1]] != y[moved[0]]:
        return False  # a block moved, not two words traded
    i, j = moved
    return j - i > 1 or not ((x[i], x[j]) in a.compounds or (y[i], y[j]) in b.compounds)


def verify(query: str | Parsed, cached: str | Parsed) -> Verdict:
    a = query if isinstance(query, Parsed) else parse(query)
    b = cached if isinstance(cached, Parsed) else parse(cached)
    if a.negations % 2 != b.negations % 2:
        return Verdict(False, "negation")
    if a.numbers != b.numbers:
        return Verdict(False, "number")
    if a.wh != b.wh:
        return Verdict(False, "question word")
    if not _names_agree(a, b):
        return Verdict(False, "name")
    if a.critical != b.critical:
        return Verdict(False, "critical word")
    if Counter(a.content) != Counter(b.content):
        return Verdict(False, "content word")
    if _roles_swapped(a, b):
        return Verdict(False, "role")
    return Verdict(True)
