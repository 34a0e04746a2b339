"""The Redis client of a process: one server, or a Redis Cluster.

`REDIS_URL` names one server (`redis://host:port/0`, `rediss://…` for TLS), or a cluster by its
seed nodes (`redis+cluster://[user:password@]host:port,host:port`, `rediss+cluster://…`);
`LIVESELL_REDIS_CLUSTER=1` reads a plain `redis://` URL as a cluster seed. Every key livesell
writes carries a hash tag (`{room:42}`, `{rl:…}`, `{link:…}`), and every script touches the keys
of one tag, so every command and script call goes to one slot whichever client runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

# what every part of livesell accepts as "the Redis client"
RedisClient = aioredis.Redis | RedisCluster

# what a Redis outage raises: redis-py's cluster client raises RedisClusterException (not a
# RedisError) when no node of the cluster answers
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 10
# connections per node (a cluster client keeps one pool per node)
MAX_CONNECTIONS = 200


@dataclass(frozen=True)
class ClusterTarget:
    """Where a cluster's seed nodes are and how to log in (the rest is asked of the cluster)."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False


def cluster_target(url: str, *, cluster: bool = False) -> ClusterTarget | None:
    """The cluster `url` names (or, with `cluster`, a plain `redis://` URL seeds), else None."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        tls = CLUSTER_SCHEMES[scheme]
    elif cluster and scheme in ("redis", "rediss"):
        tls = scheme == "rediss"
    else:
        return None
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    seeds = []
    for spec in hosts.split(","):
        host, _, port = spec.strip().rpartition(":")
        if not host:
            host, port = spec.strip(), "6379"
        seeds.append((host.strip("[]"), int(port)))
    return ClusterTarget(
        seeds=tuple(seeds),
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=tls,
    )


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def redis_client(url: str, *, cluster: bool = False) -> RedisClient:
    """A client for the server or cluster `url` names (see the module docstring)."""
    target = cluster_target(url, cluster=cluster)
    if target is None:
        return aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=HEALTH_CHECK_S,
            max_connections=MAX_CONNECTIONS,
        )
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.seeds],
        username=target.username,
        password=target.password,
        ssl=target.tls,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
        max_connections=MAX_CONNECTIONS,
    )
