"""``sycri sif list|info|header|dump|verify``: look inside SIF files, output shaped like siftool's."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from collections.abc import Callable, Sequence

from sycri.sif.format import (
    DATA_TYPE_NAMES,
    FORMAT_TYPE_NAMES,
    FS_TYPE_NAMES,
    HASH_TYPE_NAMES,
    MESSAGE_TYPE_NAMES,
    PART_TYPE_NAMES,
    SBOM_FORMAT_NAMES,
    DataType,
    Descriptor,
    Header,
    SifError,
    type_name,
)
from sycri.sif.reader import open_sif
from sycri.sif.verify import verify

_GO_ZERO_TIME = -62135596800  # time.Time{}.Unix(): the reference's "no time"
_RULE = "-" * 78


def readable_size(size: int) -> str:
    """Sizes as siftool prints them: "27 KiB", "2 B"."""
    if -1024 < size < 1024:
        return f"{size} B"
    div, exp, n = 1024, 0, int(size / 1024)
    while n <= -1024 or n >= 1024:
        div *= 1024
        exp += 1
        n = int(n / 1024)
    value = size / div
    rounded = int(value + 0.5) if value >= 0 else -int(-value + 0.5)
    return f"{rounded} {'KMGTPE'[exp]}iB"


def go_time(epoch: int) -> str | None:
    if epoch == _GO_ZERO_TIME:
        return None
    try:
        t = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return f"@{epoch}"
    return t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _table(rows: Sequence[tuple[str, str]], padding: int, indent: str = "") -> str:
    """Two columns aligned as Go's tabwriter aligns them."""
    width = max((len(k) for k, _ in rows), default=0) + padding
    return "".join(f"{indent}{k.ljust(width)}{v}\n" for k, v in rows)


def format_header(h: Header) -> str:
    rows = []
    if h.launch_script:
        rows.append(("Launch Script:", h.launch_script.removesuffix("\n")))
    rows.append(("Version:", h.version))
    if h.arch != "unknown":
        rows.append(("Primary Architecture:", h.arch))
    if h.id.int != 0:
        rows.append(("ID:", str(h.id)))
    for label, value in (("Created At:", h.created_at), ("Modified At:", h.modified_at)):
        if (text := go_time(value)) is not None:
            rows.append((label, text))
    rows += [
        ("Descriptors Free:", str(h.descriptors_free)),
        ("Descriptors Total:", str(h.descriptors_total)),
        ("Descriptors Offset:", str(h.descriptors_offset)),
        ("Descriptors Size:", readable_size(h.descriptors_size)),
        ("Data Offset:", str(h.data_offset)),
        ("Data Size:", readable_size(h.data_size)),
    ]
    return _table(rows, 1)


def _type_column(d: Descriptor) -> str:
    name = type_name(DATA_TYPE_NAMES, d.data_type)
    if d.data_type == DataType.PARTITION:
        fs = type_name(FS_TYPE_NAMES, d.fstype)
        pt = type_name(PART_TYPE_NAMES, d.parttype)
        return f"{name} ({fs}/{pt}/{d.arch})"
    if d.data_type == DataType.SIGNATURE:
        return f"{name} ({type_name(HASH_TYPE_NAMES, d.hash_type)})"
    if d.data_type == DataType.CRYPTO_MESSAGE:
        ft = type_name(FORMAT_TYPE_NAMES, d.format_type)
        mt = type_name(MESSAGE_TYPE_NAMES, d.message_type)
        return f"{name} ({ft}/{mt})"
    if d.data_type == DataType.SBOM:
        return f"{name} ({type_name(SBOM_FORMAT_NAMES, d.sbom_format, 'unknown')})"
    return name


def _link(d: Descriptor) -> str:
    if d.link == 0:
        return "NONE"
    return f"{d.link} (G)" if d.link_is_group else str(d.link)


def format_list(descriptors: Sequence[Descriptor]) -> str:
    out = [
        _RULE,
        f"{'ID':<4} {'|GROUP':<8} {'|LINK':<8} {'|SIF POSITION (start-end)':<26} |TYPE",
        _RULE,
    ]
    for d in descriptors:
        group = "NONE" if d.group_id == 0 else str(d.group_id)
        if d.link == 0:
            link = f"|{'NONE':<7}"
        elif d.link_is_group:
            link = f"|{d.link:<3} (G)"
        else:
            link = f"|{d.link:<7}"
        position = f"|{d.offset}-{d.end} "
        out.append(f"{d.id:<4} |{group:<7} {link} {position:<26} |{_type_column(d)}")
    return "\n".join(out) + "\n"


def format_info(d: Descriptor) -> str:
    rows = [
        ("Data Type:", type_name(DATA_TYPE_NAMES, d.data_type)),
        ("ID:", str(d.id)),
        ("Group ID:", "NONE" if d.group_id == 0 else str(d.group_id)),
        ("Linked ID:", _link(d)),
        ("Offset:", str(d.offset)),
        ("Size:", str(d.size)),
    ]
    for label, value in (("Created At:", d.created_at), ("Modified At:", d.modified_at)):
        if (text := go_time(value)) is not None:
            rows.append((label, text))
    if d.name:
        rows.append(("Name:", d.name))
    if d.data_type == DataType.PARTITION:
        rows += [
            ("Filesystem Type:", type_name(FS_TYPE_NAMES, d.fstype)),
            ("Partition Type:", type_name(PART_TYPE_NAMES, d.parttype)),
            ("Architecture:", str(d.arch)),
        ]
    elif d.data_type == DataType.SIGNATURE:
        rows.append(("Hash Type:", type_name(HASH_TYPE_NAMES, d.hash_type)))
        if d.entity:
            rows.append(("Entity:", d.entity.hex().upper()))
    elif d.data_type == DataType.CRYPTO_MESSAGE:
        rows.append(("Format Type:", type_name(FORMAT_TYPE_NAMES, d.format_type)))
        rows.append(("Message Type:", type_name(MESSAGE_TYPE_NAMES, d.message_type)))
    elif d.data_type == DataType.SBOM:
        rows.append(("Format:", type_name(SBOM_FORMAT_NAMES, d.sbom_format, "unknown")))
    elif d.data_type in (DataType.OCI_BLOB, DataType.OCI_ROOT_INDEX):
        rows.append(("Digest:", str(d.digest)))
    return _table(rows, 2, indent="  ")


def _cmd_list(opts: argparse.Namespace) -> int:
    with open_sif(opts.file) as img:
        sys.stdout.write(format_list(img.descriptors))
    return 0


def _cmd_header(opts: argparse.Namespace) -> int:
    with open_sif(opts.file) as img:
        sys.stdout.write(format_header(img.header))
    return 0


def _cmd_info(opts: argparse.Namespace) -> int:
    with open_sif(opts.file) as img:
        sys.stdout.write(format_info(img.descriptor(opts.id)))
    return 0


def _cmd_dump(opts: argparse.Namespace) -> int:
    with open_sif(opts.file) as img:
        d = img.descriptor(opts.id)
        sys.stdout.flush()
        out = sys.stdout.buffer
        for chunk in img.iter_object(d):
            out.write(chunk)
        out.flush()
    return 0


def _cmd_verify(opts: argparse.Namespace) -> int:
    results = asyncio.run(verify(opts.file, opts.key or ()))
    if not results:
        print(f"{opts.file}: no signatures")
        return 1
    for r in results:
        state = "OK" if r.ok else "FAILED"
        covered = ",".join(map(str, r.signed_ids)) or "-"
        signer = f" signer {r.signer}" if r.signer else ""
        print(
            f"signature {r.signature_id} ({r.kind}) over objects {covered}: {state}{signer}: {r.message}"
        )
    return 0 if all(r.ok for r in results) else 1


def _run(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def wrapped(opts: argparse.Namespace) -> int:
        try:
            return func(opts)
        except SifError as exc:
            print(f"sycri sif: {exc.message}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1

    return wrapped


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sycri sif ...`` to the main command line."""
    sif = subparsers.add_parser("sif", help="inspect and verify SIF image files")
    sub = sif.add_subparsers(dest="sif_command", required=True)
    for name, func, text in (
        ("list", _cmd_list, "list data objects"),
        ("header", _cmd_header, "show the global header"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", metavar="FILE")
        p.set_defaults(func=_run(func))
    for name, func, text in (
        ("info", _cmd_info, "show one data object's descriptor"),
        ("dump", _cmd_dump, "write one data object's bytes to stdout"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", type=int, metavar="ID")
        p.add_argument("file", metavar="FILE")
        p.set_defaults(func=_run(func))
    p = sub.add_parser("verify", help="verify the signatures (exit 0 only if all are valid)")
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "-k",
        "--key",
        action="append",
        metavar="KEYFILE",
        help="PGP public key (armored or binary) or PEM public key (DSSE); repeatable",
    )
    p.set_defaults(func=_run(_cmd_verify))
