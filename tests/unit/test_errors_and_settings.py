from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from llmgw.kit.errors import ConfigError, InvalidArgument, NotFound, RateLimited, Unavailable, from_status
from llmgw.kit.logging import mask_secrets
from llmgw.kit.settings import ServiceSettings, load_settings


class TestErrorMapping:
    def test_invalid_argument_round_trips_with_its_field(self) -> None:
        err = InvalidArgument("variables.text", "missing")
        back = from_status(err.code, err.message, err.metadata)
        assert isinstance(back, InvalidArgument) and back.field == "variables.text" and back.message == err.message

    def test_rate_limited_retry_after_rounds_up_and_round_trips(self) -> None:
        err = RateLimited("over", retry_after_s=1.2, limit="tenant-rpm")
        assert err.metadata["retry-after"] == "2"
        back = from_status(err.code, err.message, err.metadata)
        assert isinstance(back, RateLimited) and back.limit == "tenant-rpm" and back.retry_after_s == 2

    def test_codes(self) -> None:
        assert from_status(grpc.StatusCode.NOT_FOUND, "x").__class__ is NotFound
        assert from_status(grpc.StatusCode.UNAVAILABLE, "x").retriable
        assert not InvalidArgument("a", "b").retriable


class TestSettings:
    class S(ServiceSettings):
        redis_url: str = "redis://x"
        ratio: float = 0.5

    def test_reads_upper_case_variables(self) -> None:
        s = load_settings(self.S, {"PORT": "1234", "RATIO": "0.25", "UNRELATED": "x"})
        assert s.port == 1234 and s.ratio == 0.25 and s.redis_url == "redis://x"

    def test_bad_value_names_the_variable(self) -> None:
        with pytest.raises(ConfigError, match="PORT"):
            load_settings(self.S, {"PORT": "not-a-number"})

    def test_secrets_are_masked_in_logs(self) -> None:
        line = mask_secrets("key sk-abcdefghijklmnopqrstuv and Bearer demo-key-123")
        assert "klmnop" not in line and "demo-key-123" not in line


def test_unavailable_keeps_attempts() -> None:
    assert Unavailable("x", attempts=[1, 2]).attempts == [1, 2]


def test_colocate_is_read_from_a_comma_list_and_a_wrong_name_is_named() -> None:
    from llmgw.services.ingress.settings import IngressSettings

    assert load_settings(IngressSettings, {"COLOCATE": "limiter, cache"}).colocate == {"limiter", "cache"}
    assert load_settings(IngressSettings, {}).colocate == frozenset()
    with pytest.raises(ConfigError, match="COLOCATE"):
        load_settings(IngressSettings, {"COLOCATE": "limiter,frontend"})
    assert load_settings(IngressSettings, {"COLOCATE": "limiter,cache,router"}).colocate == {"limiter", "cache",
                                                                                           "router"}


def test_a_colocated_core_reads_its_settings_with_a_prefix() -> None:
    from llmgw.services.limiter.settings import LimiterSettings

    env = {"LIMITER_REDIS_URL": "redis://10.0.0.1:6379/2", "REDIS_URL": "redis://elsewhere:1/0"}
    assert load_settings(LimiterSettings, env, prefix="LIMITER_").redis_url == "redis://10.0.0.1:6379/2"
    with pytest.raises(ConfigError, match="LIMITER_REDIS_TIMEOUT_S"):
        load_settings(LimiterSettings, {"LIMITER_REDIS_TIMEOUT_S": "soon"}, prefix="LIMITER_")


def test_request_events_are_keyed_by_segment_fields_or_request_id_and_nothing_else() -> None:
    from llmgw.services.ingress.settings import IngressSettings

    assert load_settings(IngressSettings, {}).request_events_key_by == "tenant,route,prompt,label"
    assert load_settings(IngressSettings, {"REQUEST_EVENTS_KEY_BY": "tenant, prompt"}).request_events_key_by == \
        "tenant,prompt"
    assert load_settings(IngressSettings, {"REQUEST_EVENTS_KEY_BY": "request_id"}).request_events_key_by == "request_id"
    for bad in ("model", "tenant,request_id", ""):
        with pytest.raises(ConfigError, match="REQUEST_EVENTS_KEY_BY"):
            load_settings(IngressSettings, {"REQUEST_EVENTS_KEY_BY": bad})


def test_redis_urls_pick_their_client_and_bad_ones_are_named() -> None:
    from redis.asyncio.cluster import RedisCluster

    from llmgw.kit.redis import connect, describe

    assert isinstance(connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7000"), RedisCluster)
    with pytest.raises(ValueError, match="scheme must be one of"):
        connect("http://redis:6379")
    with pytest.raises(ValueError, match="name the Sentinel service"):
        connect("redis+sentinel://s1:26379")
    assert describe("redis://user:secret@redis:6379/0") == "redis://user:***@redis:6379/0"


def test_a_split_ingress_does_not_import_the_provider_sdks() -> None:
    """Start fast: the SDKs take seconds to import and only the router (or an ingress running the
    router core) calls providers."""
    import subprocess
    import sys

    code = ("import sys, llmgw.services.ingress.app; "
            "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_cache_without_the_semantic_tier_does_not_import_numpy_or_the_model() -> None:
    """``pip install .`` runs the cache without numpy or torch: only a policy that turns the
    semantic tier on needs them (the ``semantic`` extra)."""
    import subprocess
    import sys

    code = ("import sys, llmgw.services.cache.app, llmgw.services.ingress.app; "
            "print(sorted(m for m in ('numpy', 'torch', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_semantic_policy_without_the_extra_is_refused_at_start_naming_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - match: {prompt: faq}\n    semantic: {enabled: true}\n")
    code = ("import sys, asyncio; sys.modules['numpy'] = None\n"  # as if numpy were not installed
            "from llmgw.services.cache.app import start_core\n"
            "from llmgw.services.cache.settings import CacheSettings\n"
            "from llmgw.kit.errors import ConfigError\n"
            f"s = CacheSettings(policy_file={str(policy)!r})\n"
            "try:\n    asyncio.run(start_core(s))\nexcept ConfigError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("refused:") and "llmgw[semantic]" in out and "numpy" in out


def test_the_system_helper_lets_extra_env_set_any_running_service_the_drift_job_included() -> None:
    """``start_system(extra_env=...)`` applied its settings before the drift job's entry existed
    (a KeyError): the real job could not be run with its own sizes from the helper."""
    from pathlib import Path

    from llmgw.up import service_settings

    ports = {"limiter": 1, "cache": 2, "router": 3, "drift": 4, "ingress": 5}
    common = {"OPENAI_BASE_URL": "http://fake/v1", "REDIS_URL": "redis://r:6379/0"}

    def settings(**kw: object) -> dict[str, dict[str, str]]:
        return service_settings(common, ports, redis_url="redis://r:6379/0", limits_file=Path("limits.yaml"),
                                api_keys="k=t", workdir=Path("w"), http_addr="127.0.0.1:8080", **kw)  # type: ignore[arg-type]

    got = settings(cores=(), with_drift=True, extra_env={"drift": {"WINDOW_SIZE": "200", "REFERENCE_SIZE": "2000"}})
    assert got["drift"] == {"WINDOW_SIZE": "200", "REFERENCE_SIZE": "2000", "BATCH_SECONDS": "2"}
    with pytest.raises(ValueError, match="'drift'"):
        settings(cores=(), with_drift=False, extra_env={"drift": {"WINDOW_SIZE": "200"}})
    allin = settings(cores=("limiter", "cache", "router"), with_drift=False, extra_env=None)["ingress"]
    assert allin["COLOCATE"] == "limiter,cache,router" and allin["ROUTER_OPENAI_BASE_URL"] == "http://fake/v1"
