"""``python -m llmgw.services.limiter``: run the limiter until SIGTERM."""

from llmgw.kit.main import run_service
from llmgw.services.limiter.app import build
from llmgw.services.limiter.settings import LimiterSettings

if __name__ == "__main__":
    run_service("limiter", LimiterSettings, build)
