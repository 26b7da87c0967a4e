"""Gateways sharing state: the link to the cluster's bus (`link`: one gateway alone, or Redis in `redis_link`) and
cluster-wide rate limits (`ratelimit`)."""
