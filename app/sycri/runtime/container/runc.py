"""The OCI runtime's command line (runc and compatibles), one method per verb."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from sycri import command
from sycri.command import CommandFailed
from sycri.errors import Internal, NotFound


@dataclass(frozen=True)
class Runc:
    binary: str
    root: str
    systemd_cgroup: bool = False

    def argv(self, *args: str) -> list[str]:
        base = [self.binary, "--root", self.root]
        if self.systemd_cgroup:
            base.append("--systemd-cgroup")
        return [*base, *args]

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """runc's view (status, pid, bundle), or None when runc does not know it."""
        result = await command.run(
            self.argv("state", container_id), check=False, label="runc state", timeout=30
        )
        if not result.ok:
            return None
        try:
            state = json.loads(result.stdout)
        except ValueError:
            raise Internal(f"runc state {container_id}: not JSON") from None
        if not isinstance(state, dict):
            raise Internal(f"runc state {container_id}: not a JSON object")
        return state

    async def start(self, container_id: str) -> None:
        await command.run(self.argv("start", container_id), label="runc start", timeout=60)

    async def kill(self, container_id: str, signal: int, all_processes: bool = False) -> bool:
        """Send ``signal``; False when the container is already gone or stopped."""
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        result = await command.run(self.argv(*args), check=False, label="runc kill", timeout=30)
        return result.ok

    async def delete(self, container_id: str) -> None:
        """Delete (killing) the container; nothing to do, and no process started, when
        runc keeps no state for it (never launched: created, not started)."""
        if not os.path.lexists(os.path.join(self.root, container_id)):
            return
        result = await command.run(
            self.argv("delete", "--force", container_id),
            check=False,
            label="runc delete",
            timeout=60,
        )
        if not result.ok and b"does not exist" not in result.stderr:
            raise CommandFailed(result, "runc delete")

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        try:
            await command.run(
                self.argv("update", "--resources", "-", container_id),
                input=json.dumps(resources).encode(),
                label="runc update",
                timeout=60,
            )
        except CommandFailed as exc:
            if b"does not exist" in exc.result.stderr:
                raise NotFound(f"container {container_id} is not running") from None
            raise
