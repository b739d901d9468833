"""exec, attach and port-forward over HTTP: the streaming server kubelet proxies to.

- ``server``: :class:`StreamingServer` (start/stop, ``url_for(request)``), routing,
  idle timeout.
- ``remotecommand``: exec and attach sessions over SPDY or WebSocket (streams to stdio,
  the Status at the end); ``portforward``: port-forward sessions, each stream joined to
  a socket made inside the pod's netns by setns(2).
- ``tokens``: single-use expiring tokens and the request types they name.
- ``spdy``, ``websocket``, ``upgrade``: the wire protocols (SPDY/3.1 with zlib header
  compression; RFC 6455 with the Kubernetes channel prefix; the HTTP upgrade and its
  101 reply).
- ``channel``: what backends see of a client (Inbox, Outbound, Stdio), resize events,
  the Kubernetes Status objects clients parse for exit codes.
- ``execution`` (runc exec, pipes or a TTY), ``attach`` (conmon's attach socket and
  ctl fifo).
- ``targets``: the small interface to the container and sandbox registries.
"""
