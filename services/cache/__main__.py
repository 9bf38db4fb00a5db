"""``python -m llmgw.services.cache``: run the cache until SIGTERM."""

from llmgw.kit.main import run_service
from llmgw.services.cache.app import build
from llmgw.services.cache.settings import CacheSettings

if __name__ == "__main__":
    run_service("cache", CacheSettings, build)
