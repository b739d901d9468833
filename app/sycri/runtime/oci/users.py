"""Who a container runs as: the request's user settings and the image's USER, resolved
against the image's own /etc/passwd and /etc/group (given as text, so this stays pure).
"""

from __future__ import annotations

from dataclasses import dataclass

from sycri.errors import InvalidArgument, excerpt


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...]  # sorted, without the primary gid
    username: str = ""  # empty when the uid has no passwd entry
    home: str = "/"


def parse_passwd(text: str) -> list[PasswdEntry]:
    """The well-formed entries of a passwd file; malformed lines are skipped (images lie)."""
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 7 or line.startswith("#"):
            continue
        try:
            uid, gid = int(parts[2]), int(parts[3])
        except ValueError:
            continue
        if _id_ok(uid) and _id_ok(gid):
            out.append(PasswdEntry(parts[0], uid, gid, parts[5] or "/"))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        if _id_ok(gid):
            members = tuple(m for m in parts[3].split(",") if m)
            out.append(GroupEntry(parts[0], gid, members))
    return out


def _id_ok(value: int) -> bool:
    return 0 <= value < 2**32 - 1


def _numeric(text: str) -> int | None:
    if text.isdigit():
        value = int(text)
        if not _id_ok(value):
            raise InvalidArgument(f"user or group id {excerpt(text)} is out of range")
        return value
    return None


@dataclass(frozen=True)
class UserRequest:
    """The user settings of a container's security context (None: not set)."""

    run_as_user: int | None = None
    run_as_username: str = ""
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    strict: bool = False  # supplementalGroupsPolicy Strict: ignore the image's groups


def resolve(req: UserRequest, image_user: str, passwd: str, group: str) -> ResolvedUser:
    """The uid, gid and supplemental groups the container's process gets.

    Order of precedence as kubelet/containerd apply it: run_as_user, then
    run_as_username, then the image's USER (``name``, ``uid``, ``name:group``,
    ``uid:gid``); run_as_group overrides the group. Names missing from the image's
    files are errors naming the field; a numeric uid unknown to the image is fine
    (gid 0 unless given).
    """
    if req.run_as_group is not None and req.run_as_user is None and not req.run_as_username:
        # kubelet and containerd refuse this too: a group alone would silently pair
        # with whatever user the image names.
        raise InvalidArgument("run_as_group is set without run_as_user or run_as_username")
    users = parse_passwd(passwd)
    groups = parse_group(group)
    entry: PasswdEntry | None = None
    explicit_gid: int | None = None
    if req.run_as_user is not None:
        if not _id_ok(req.run_as_user):
            raise InvalidArgument(f"run_as_user {req.run_as_user} is out of range")
        uid = req.run_as_user
        entry = next((u for u in users if u.uid == uid), None)
    elif req.run_as_username:
        entry = next((u for u in users if u.name == req.run_as_username), None)
        if entry is None:
            raise InvalidArgument(
                f"run_as_username {excerpt(req.run_as_username)} is not in the image's /etc/passwd"
            )
        uid = entry.uid
    else:
        user_part, _, group_part = (image_user or "").partition(":")
        if not user_part:
            uid = 0
            entry = next((u for u in users if u.uid == 0), None)
        else:
            num = _numeric(user_part)
            if num is not None:
                uid = num
                entry = next((u for u in users if u.uid == uid), None)
            else:
                entry = next((u for u in users if u.name == user_part), None)
                if entry is None:
                    raise InvalidArgument(
                        f"image USER {excerpt(image_user)}: user {excerpt(user_part)} "
                        "is not in the image's /etc/passwd"
                    )
                uid = entry.uid
        if group_part:
            num = _numeric(group_part)
            if num is not None:
                explicit_gid = num
            else:
                g = next((g for g in groups if g.name == group_part), None)
                if g is None:
                    raise InvalidArgument(
                        f"image USER {excerpt(image_user)}: group {excerpt(group_part)} "
                        "is not in the image's /etc/group"
                    )
                explicit_gid = g.gid
    if req.run_as_group is not None:
        if not _id_ok(req.run_as_group):
            raise InvalidArgument(f"run_as_group {req.run_as_group} is out of range")
        explicit_gid = req.run_as_group
    gid = explicit_gid if explicit_gid is not None else (entry.gid if entry else 0)
    extra: set[int] = set()
    if entry is not None and not req.strict:
        extra.update(g.gid for g in groups if entry.name in g.members)
    for sgid in req.supplemental_groups:
        if not _id_ok(sgid):
            raise InvalidArgument(f"supplemental group {sgid} is out of range")
        extra.add(sgid)
    extra.discard(gid)
    return ResolvedUser(
        uid=uid,
        gid=gid,
        additional_gids=tuple(sorted(extra)),
        username=entry.name if entry else "",
        home=entry.home if entry else "/",
    )
