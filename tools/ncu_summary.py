#!/usr/bin/env python3
"""Summarises `ncu --csv --metrics gpu__time_duration.sum` output: time per
kernel name over the profiled launches, and the last N launches in order (one
decode step when the profiled program ends with decode steps).

usage: ncu_summary.py NCU_CSV [--last N]
"""
import argparse
import csv
import collections
import sys


def rows(path):
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu prefixes its own log lines with ==PROF==
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "nsecond")
        value = float(r["Metric Value"].replace(",", ""))
        scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit, 1e-3)
        yield r["Kernel Name"], value * scale


def short(name):
    name = name.split("(")[0]
    return name[:90]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--last", type=int, default=0, help="also list the last N launches in order")
    a = ap.parse_args()
    launches = list(rows(a.csv))
    if not launches:
        sys.exit("no gpu__time_duration.sum rows in " + a.csv)
    total = collections.defaultdict(float)
    count = collections.Counter()
    for name, us in launches:
        total[short(name)] += us
        count[short(name)] += 1
    all_us = sum(total.values())
    print(f"{len(launches)} launches, {all_us:.1f} us in all\n")
    print("| kernel | launches | total us | mean us | share |\n|---|---:|---:|---:|---:|")
    for name, us in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {count[name]} | {us:.1f} | {us / count[name]:.2f} | {100 * us / all_us:.1f}% |")
    if a.last:
        tail = launches[-a.last:]
        tail_total = collections.defaultdict(float)
        tail_count = collections.Counter()
        for name, us in tail:
            tail_total[short(name)] += us
            tail_count[short(name)] += 1
        tail_us = sum(us for _, us in tail)
        print(f"\nlast {len(tail)} launches ({tail_us:.1f} us), by kernel:\n")
        print("| kernel | launches | total us | mean us | share |\n|---|---:|---:|---:|---:|")
        for name, us in sorted(tail_total.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {tail_count[name]} | {us:.1f} | {us / tail_count[name]:.2f} | {100 * us / tail_us:.1f}% |")
        print(f"\nlast {len(tail)} launches in order:\n")
        for name, us in tail:
            print(f"{us:9.2f}  {short(name)}")


if __name__ == "__main__":
    main()
