"""``python -m llmgw.services.router``: run the router until SIGTERM."""

from llmgw.kit.main import run_service
from llmgw.services.router.app import build
from llmgw.services.router.settings import RouterSettings

if __name__ == "__main__":
    run_service("router", RouterSettings, build)
