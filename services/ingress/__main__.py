"""``python -m llmgw.services.ingress``: run the public gateway until SIGTERM."""

from llmgw.kit.main import run_service
from llmgw.services.ingress.app import build
from llmgw.services.ingress.settings import IngressSettings

if __name__ == "__main__":
    run_service("ingress", IngressSettings, build)
