"""The markdown table every bench script prints (rows of name, value, comparison, or the columns of `header`)."""

from __future__ import annotations


def print_table(rows: list[tuple[str, ...]], value: str = "time", comparison: str = "ratio",
                header: tuple[str, ...] | None = None) -> None:
    header = header or ("measurement", value, comparison)
    width = max(len(r[0]) for r in [header, *rows])
    print("| " + " | ".join([header[0].ljust(width), *header[1:]]) + " |")
    print("| " + " | ".join(["-" * width] + ["---"] * (len(header) - 1)) + " |")
    for name, *cells in rows:
        print("| " + " | ".join([name.ljust(width), *cells]) + " |")
