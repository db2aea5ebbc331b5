"""Reading load from the servers a sidecar fronts, in each server's own metrics format."""

from __future__ import annotations

from smmf.sidecar.probe import LoadSample, UpstreamType, parse_load

# The format llama-server emits on /metrics (llama.cpp tools/server): a HELP and TYPE line per metric,
# `llamacpp:` names with a colon, no labels.
LLAMA_SERVER = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1024
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 3.5
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 4096
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.25
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 3
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 2
"""

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="gemma"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="gemma"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="gemma"} 0.125
# HELP vllm:prefix_cache_queries Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="gemma"} 4096.0
# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="gemma"} 1024.0
"""

OLD_VLLM = VLLM.replace("kv_cache_usage_perc", "gpu_cache_usage_perc").replace("vllm:prefix", "vllm:gpu_prefix")


def test_llama_server_metrics() -> None:
    assert parse_load(LLAMA_SERVER, UpstreamType.LLAMA_SERVER) == LoadSample(3, 2, 0.25)


def test_vllm_metrics_current_and_older_names() -> None:
    assert parse_load(VLLM, UpstreamType.VLLM) == LoadSample(4, 1, 0.125, 4096, 1024)
    assert parse_load(OLD_VLLM, UpstreamType.VLLM) == LoadSample(4, 1, 0.125, 4096, 1024)


def test_vllm_with_two_engines_sums_them() -> None:
    two = VLLM + 'vllm:num_requests_running{engine="1",model_name="gemma"} 2.0\n'
    assert parse_load(two, UpstreamType.VLLM).inflight == 6  # type: ignore[union-attr]


def test_metrics_without_load_give_none() -> None:
    assert parse_load("# TYPE other gauge\nother 1\n", UpstreamType.VLLM) is None
    assert parse_load(VLLM, UpstreamType.OPENAI) is None


def test_the_prefix_cache_hit_rate_is_over_the_tokens_looked_up_since_the_last_sample() -> None:
    before = LoadSample(0, 0, prefix_queries=1000, prefix_hits=100)
    assert LoadSample(0, 0, prefix_queries=3000, prefix_hits=1700).hit_rate_since(before) == 0.8
    assert LoadSample(0, 0, prefix_queries=1000, prefix_hits=100).hit_rate_since(before) is None  # nothing asked
    assert LoadSample(0, 0, prefix_queries=50, prefix_hits=0).hit_rate_since(before) is None  # restarted
    assert LoadSample(0, 0).hit_rate_since(before) is None  # a server without a prefix cache
    assert LoadSample(0, 0, prefix_queries=40, prefix_hits=30).hit_rate_since(LoadSample(0, 0)) == 0.75  # since start
