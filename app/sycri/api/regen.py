"""Regenerate ``api_pb2.py`` / ``api_pb2_grpc.py`` from ``proto/api.proto``.

Usage (from the repository root, with the dev extras installed)::

    python -m sycri.api.regen            # rewrite the generated files
    python -m sycri.api.regen --check    # exit 1 if they are stale

grpc_tools writes a top-level ``import api_pb2``; it is rewritten to a package import
so the generated modules live inside ``sycri.api``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
REPO = API_DIR.parents[2]
PROTO = REPO / "proto" / "api.proto"
OUTPUTS = ("api_pb2.py", "api_pb2_grpc.py", "api_pb2.pyi")


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency only

    args = [
        "protoc",
        f"-I{PROTO.parent}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    grpc_file = out_dir / "api_pb2_grpc.py"
    grpc_file.write_text(
        grpc_file.read_text().replace(
            "import api_pb2 as api__pb2", "from sycri.api import api_pb2 as api__pb2"
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    opts = parser.parse_args(argv)
    if not opts.check:
        generate(API_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [n for n in OUTPUTS if (Path(tmp) / n).read_text() != (API_DIR / n).read_text()]
    if stale:
        print("stale generated code: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
