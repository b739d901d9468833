"""exec, attach and port-forward over HTTP: the streaming server kubelet proxies to.

- ``server``: :class:`StreamingServer` (start/stop, ``url_for(request)``), routing,
  idle timeout, the SPDY and WebSocket sessions.
- ``tokens``: single-use expiring tokens and the request types they name.
- ``spdy``, ``websocket``, ``upgrade``: the wire protocols (SPDY/3.1 with zlib header
  compression; RFC 6455 with the Kubernetes channel prefix; the HTTP upgrade).
- ``channel``: what backends see of a client (Inbox, Outbound, Stdio), resize events,
  the Kubernetes Status objects clients parse for exit codes.
- ``execution`` (runc exec, pipes or a TTY), ``attach`` (conmon's attach socket and
  ctl fifo), ``portforward`` (a socket made inside the pod's netns by setns(2)).
- ``targets``: the small interface to the container and sandbox registries.
"""
