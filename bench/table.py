"""The markdown table every bench script prints (rows of name, value, comparison)."""

from __future__ import annotations


def print_table(rows: list[tuple[str, str, str]], value: str = "time", comparison: str = "ratio") -> None:
    width = max(len(r[0]) for r in rows)
    print(f"| {'measurement'.ljust(width)} | {value} | {comparison} |")
    print(f"| {'-' * width} | --- | --- |")
    for name, shown, compared in rows:
        print(f"| {name.ljust(width)} | {shown} | {compared} |")
