"""Keep deploy/k8s in sync with its sources, using Helm's own engine (helm-python-sdk).

    python deploy/k8s/render.py          # sync chart files, render manifests/base/llmgw.yaml
    python deploy/k8s/render.py --check  # exit 1 if anything is out of date (CI)

The chart is the source of truth: its files/ carry the shipped limits, routes and prompts, and
manifests/base is the chart rendered with its default values, for `kubectl apply -k`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import helm_python as helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "k8s" / "helm" / "llmgw"
BASE = REPO / "deploy" / "k8s" / "manifests" / "base" / "llmgw.yaml"
RELEASE, NAMESPACE = "llmgw", "llmgw"

SOURCES = {
    CHART / "files" / "limits.yaml": REPO / "services" / "limiter" / "limits.yaml",
    CHART / "files" / "routes.yaml": REPO / "services" / "router" / "routes.yaml",
}


def chart_files() -> dict[Path, bytes]:
    """What files/ must hold: the shipped configs and every prompt file."""
    want = {dst: src.read_bytes() for dst, src in SOURCES.items()}
    for src in sorted((REPO / "prompts").rglob("*.yaml")):
        want[CHART / "files" / "prompts" / src.relative_to(REPO / "prompts")] = src.read_bytes()
    return want


def render(values: dict[str, object] | None = None) -> str:
    """All templates rendered (hooks included, NOTES excluded) as one multi-document YAML."""
    out = helm.Chart.load(str(CHART)).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [text.strip() for path, text in sorted(out.items()) if not path.endswith("NOTES.txt") and text.strip()]
    return "# Rendered from deploy/k8s/helm/llmgw by deploy/k8s/render.py; do not edit.\n" + "\n---\n".join(docs) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    want = chart_files()
    have = {p: p.read_bytes() for p in (CHART / "files").rglob("*") if p.is_file()}
    stale = sorted(str(p.relative_to(REPO)) for p in set(want) | set(have) if want.get(p) != have.get(p))
    if args.check:
        rendered_stale = not BASE.exists() or BASE.read_text() != render()
        if stale or rendered_stale:
            print("out of date (run `make manifests`):", *stale, *(["manifests/base"] if rendered_stale else []))
            return 1
        print("deploy/k8s is in sync")
        return 0
    shutil.rmtree(CHART / "files", ignore_errors=True)
    for path, data in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    BASE.parent.mkdir(parents=True, exist_ok=True)
    BASE.write_text(render())
    print(f"synced {len(want)} chart files, rendered {BASE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
