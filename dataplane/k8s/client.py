"""A connection to the API server through the official `kubernetes` client, configured the way
kube-proxy configures its own (clientConnection): kubeconfig file, else in-cluster, with qps/burst
client-side rate limiting."""
from __future__ import annotations

import os
import threading
import time

__all__ = ["ApiConnection", "TokenBucket", "connect"]

IN_CLUSTER_ENV = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


class TokenBucket:
    """client-go's flowcontrol token bucket: `qps` tokens a second, at most `burst` saved up.
    qps <= 0 disables limiting (kube-proxy's -1)."""

    def __init__(self, qps: float, burst: int, clock=time.monotonic, sleep=time.sleep):
        self.qps, self.burst = qps, max(1, burst)
        self._clock, self._sleep = clock, sleep
        self._tokens = float(self.burst)
        self._last = clock()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event | None = None) -> None:
        if self.qps <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            self._tokens -= 1
            delay = -self._tokens / self.qps if self._tokens < 0 else 0.0
        if delay > 0:
            if stop is not None:
                stop.wait(delay)
            else:
                self._sleep(delay)


class ApiConnection:
    """An ApiClient plus the limiter every request of this process goes through."""

    def __init__(self, api_client, limiter: TokenBucket, source: str):
        self.api = api_client
        self.limiter = limiter
        self.source = source          # where the configuration came from (logs)

    @property
    def host(self) -> str:
        return self.api.configuration.host

    def request(self, path: str, query: list[tuple[str, str]], timeout, stop=None):
        """GET path?query through the client (auth, TLS, proxies as configured); returns the
        urllib3 response, unread (the caller streams or reads it and releases it)."""
        self.limiter.wait(stop)
        method, url, headers, _, _ = self.api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        return self.api.call_api(method, url, header_params=headers, _request_timeout=timeout).response

    def close(self) -> None:
        self.api.close()


def connect(kubeconfig: str | None, qps: float = 5.0, burst: int = 10) -> ApiConnection:
    """kube-proxy's order: an explicit kubeconfig (flag, else clientConnection.kubeconfig), else
    the in-cluster service account. Raises ValueError naming what is missing."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig:
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration,
                                    persist_config=False)
        except (OSError, config.ConfigException) as exc:
            raise ValueError(f"kubeconfig {kubeconfig}: {exc}") from None
        source = kubeconfig
    elif all(os.environ.get(k) for k in IN_CLUSTER_ENV):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as exc:
            raise ValueError(f"in-cluster configuration: {exc}") from None
        source = "in-cluster"
    else:
        raise ValueError("no kubeconfig (--kubeconfig or clientConnection.kubeconfig) and not "
                         "running in a pod (KUBERNETES_SERVICE_HOST unset)")
    return ApiConnection(client.ApiClient(configuration), TokenBucket(qps, burst), source)
