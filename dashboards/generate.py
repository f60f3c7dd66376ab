"""Render the dashboards to the JSON files checked in beside this module (`ticketflow dashboards build`)."""

from __future__ import annotations

import json
from pathlib import Path

from dashboards.definitions import ALL

HERE = Path(__file__).resolve().parent


def render() -> dict[str, str]:
    """File name to JSON text, stable byte for byte so a stale checked-in file shows in a diff."""
    return {
        f"{d.uid.removeprefix('ticketflow-')}.json": json.dumps(d.to_json(), indent=2, ensure_ascii=False) + "\n"
        for d in ALL
    }


def write(directory: Path = HERE) -> list[Path]:
    written = []
    for name, text in render().items():
        path = directory / name
        if not path.exists() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    for p in write():
        print(f"wrote {p}")
