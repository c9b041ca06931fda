#!/usr/bin/env python3
"""Prints the README's tables from criterion's estimates (median ns per pick).

Run after `cargo bench`, from benches/peers:
    python3 report.py [target-dir]      (default: target)
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
SIZES = [3, 100, 10000, 100000]

rows = {}  # "library/algorithm" -> {endpoints: median ns}
steps = {}  # substeps bench: full id -> median ns
for meta in root.glob("**/new/benchmark.json"):
    bench = json.loads(meta.read_text())
    est = json.loads((meta.parent / "estimates.json").read_text())
    median = est["median"]["point_estimate"]
    value = bench.get("value_str")
    if value and value.isdigit():
        row = bench["group_id"]
        if bench.get("function_id"):
            row += "/" + bench["function_id"]
        rows.setdefault(row, {})[int(value)] = median
    else:
        steps[bench["full_id"]] = median


def fmt(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} µs"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f}"


if rows:
    print("Median ns per pick (single thread unless the row says otherwise):")
    print()
    print("| library / algorithm | " + " | ".join(f"{n:,}" for n in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    order = ["tower-lb/", "tower-lb-cached/", "tower/", "pingora/", "reqwest-lb/",
             "tower-lb-2-threads/", "tower-lb-cached-2-threads/"]
    for prefix in order:
        for row in sorted(r for r in rows if r.startswith(prefix)):
            cells = [fmt(rows[row].get(n)) for n in SIZES]
            print(f"| {row} | " + " | ".join(cells) + " |")

    peers = {r: v for r, v in rows.items() if not r.startswith("tower-lb")}
    if peers:
        fastest = min(peers, key=lambda r: peers[r].get(100, float("inf")))
        best = peers[fastest][100]
        print()
        print(f"Fastest peer at 100 endpoints: {fastest}, {best:.1f} ns.")
        print()
        print("| tower-lb balancer | ns at 100 | fastest peer / tower-lb at 100 |"
              " at 10,000 / at 3 | at 100,000 / at 3 |")
        print("|---|---:|---:|---:|---:|")
        for prefix in ["tower-lb/", "tower-lb-cached/"]:
            for row in sorted(r for r in rows if r.startswith(prefix)):
                r = rows[row]
                print(
                    f"| {row} | {r[100]:.1f} | {best / r[100]:.2f}x"
                    f" | {r[10000] / r[3]:.2f} | {r[100000] / r[3]:.2f} |"
                )

if steps:
    print()
    print("| sub-step | median ns |")
    print("|---|---:|")
    for name in sorted(steps):
        print(f"| {name} | {steps[name]:.1f} |")
