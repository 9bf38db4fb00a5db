"""The drift benchmark's corpora: real, human-written text grouped by topic, all offline.

* ``stdlib``: sentences of the documentation strings of Python's standard library, grouped by
  module family; built at run time from the interpreter's own modules.
* ``debian``: the one-line descriptions of Debian bookworm packages, grouped by archive section
  (written by thousands of package maintainers; short, like many prompts). Shipped as
  ``bench/data/drift_debian.tsv``; rebuilt from the machine's apt lists with
  ``python -m bench.drift_corpus --rebuild-debian``.

Each corpus names its known topics (the reference mix), a *distinct* new topic (unlike any known
one) and a *near* new topic (close to a known one: the hard case).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import pkgutil
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CORPORA", "Corpus", "load"]

DATA = Path(__file__).parent / "data" / "drift_debian.tsv"


@dataclass(frozen=True)
class Corpus:
    name: str
    known: dict[str, float]  # topic -> share of the reference mix
    distinct: str
    near: str


CORPORA = {
    "stdlib": Corpus("stdlib", {"email": 0.3, "http": 0.2, "asyncio": 0.2, "logging": 0.1, "xml": 0.1,
                                "archives": 0.1}, distinct="numbers", near="sockets"),
    "debian": Corpus("debian", {"games": 0.3, "mail": 0.2, "database": 0.2, "graphics": 0.1, "sound": 0.1,
                                "editors": 0.1}, distinct="hamradio", near="video"),
}

_STDLIB = {"email": ["email"], "http": ["http", "urllib"], "asyncio": ["asyncio"], "logging": ["logging"],
           "xml": ["xml"], "archives": ["tarfile", "zipfile", "gzip", "bz2", "lzma", "shutil"],
           "numbers": ["decimal", "fractions", "statistics", "random"],
           "sockets": ["socket", "ssl", "selectors", "socketserver"]}


def _docstrings(modname: str) -> list[str]:
    try:
        root = importlib.import_module(modname)
    except ImportError:
        return []
    mods = [root]
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), modname + "."):
        if "test" not in info.name:
            try:
                mods.append(importlib.import_module(info.name))
            except Exception:  # optional submodules (platform-specific) are skipped
                continue
    out: dict[int, str] = {}
    for m in mods:
        for obj in [m, *(v for _, v in inspect.getmembers(m))]:
            if getattr(obj, "__module__", m.__name__) and not (inspect.ismodule(obj) or inspect.isclass(obj)
                                                                or inspect.isfunction(obj)):
                continue
            if (owner := getattr(obj, "__module__", None)) and not str(owner).startswith(modname):
                continue  # re-exported from elsewhere: another topic's text
            if d := inspect.getdoc(obj):
                out[id(d)] = d
            if inspect.isclass(obj):
                for _, f in inspect.getmembers(obj, inspect.isfunction):
                    if d := inspect.getdoc(f):
                        out[id(d)] = d
    return list(out.values())


def _stdlib() -> dict[str, list[str]]:
    """Sentences of 6-40 words per group, code-looking ones left out; sorted for reproducibility."""
    result = {}
    for name, mods in _STDLIB.items():
        sents: set[str] = set()
        for mod in mods:
            for doc in _docstrings(mod):
                for para in doc.split("\n\n"):
                    for s in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
                        if 6 <= len(s.split()) <= 40 and not re.search(r"[>{}=\[\]|]|::", s):
                            sents.add(s)
        result[name] = sorted(sents)
    # A sentence in two groups (shared helpers' docs) says nothing about either.
    seen: dict[str, int] = {}
    for sents in result.values():
        for s in sents:
            seen[s] = seen.get(s, 0) + 1
    return {k: [s for s in v if seen[s] == 1] for k, v in result.items()}


def _debian() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in DATA.read_text().splitlines():
        section, _, text = line.partition("\t")
        out.setdefault(section, []).append(text)
    return out


def load(name: str) -> dict[str, list[str]]:
    return {"stdlib": _stdlib, "debian": _debian}[name]()


def rebuild_debian(packages: str, most: int = 600) -> None:
    """Descriptions per section of the corpus's topics from an apt ``Packages`` list: trailing
    qualifiers ("(data files)", "- documentation") cut, so a package's parts count once."""
    c = CORPORA["debian"]
    wanted = {*c.known, c.distinct, c.near}
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", packages], check=True, capture_output=True,
                          text=True).stdout
    by: dict[str, set[str]] = {}
    for block in text.split("\n\n"):
        sec, desc = re.search(r"^Section: (\S+)", block, re.M), re.search(r"^Description: (.+)", block, re.M)
        if not sec or not desc or (section := sec.group(1).split("/")[-1]) not in wanted:
            continue
        d = re.sub(r"\s*[(\[][^)\]]*[)\]]\s*$", "", desc.group(1)).strip()
        d = re.sub(r"\s+-+\s*(data|documentation|common|development|debug|transitional).*$", "", d, flags=re.I)
        if len(d.split()) >= 3 and "\t" not in d:
            by.setdefault(section, set()).add(d.strip())
    lines = []
    for section in sorted(by):
        # A fixed, content-addressed subsample: the same file from the same list everywhere.
        chosen = sorted(by[section], key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:most]
        lines += [f"{section}\t{t}" for t in sorted(chosen)]
    DATA.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild-debian", action="store_true")
    ap.add_argument("--packages",
                    default="/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4")
    args = ap.parse_args()
    if args.rebuild_debian:
        rebuild_debian(args.packages)
    for n in CORPORA:
        print(n, {k: len(v) for k, v in load(n).items()})
