"""``python -m analytics.synth --data DIR [--days N] [--rows N] [--licenses N] [--seed N] [--end ISO]
[--shape gateway|skewed]``."""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime

from .history import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics.synth", description=__doc__)
    parser.add_argument("--data", required=True, help="data directory to fill (its audit/ must be empty)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--licenses", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shape", choices=("gateway", "skewed"), default="gateway",
                        help="gateway: as this gateway writes it; skewed: most licenses expiring soon, a few "
                             "carrying most traffic, files as another engine writes them")
    parser.add_argument("--end", type=datetime.fromisoformat, default=None,
                        help="end of the history (ISO 8601, UTC if no offset); default: now")
    args = parser.parse_args(argv)
    try:
        summary = generate(args.data, days=args.days, rows=args.rows, end=args.end, licenses=args.licenses,
                           seed=args.seed, shape=args.shape, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
