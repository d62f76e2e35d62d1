#!/usr/bin/env python3
"""How far one run's reports are from another's (a program, not a test): cmn-generate JSON lines keyed by "id"
(archive modes) or "study" (--images). Prints one JSON line: studies in both, identical reports, mean and minimum
bag-of-words F1, mean |log_prob difference|. Used for the precision and draft-decoding tables of the README:

  bench/compare_reports.py fp32.jsonl bf16.jsonl
"""
import collections
import json
import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            if "report" not in row:
                continue  # a failed study's line
            out[row.get("id", row.get("study"))] = row
    return out


def token_f1(a, b):
    a, b = a.split(), b.split()
    if not a and not b:
        return 1.0
    common = sum((collections.Counter(a) & collections.Counter(b)).values())
    if common == 0:
        return 0.0
    p, r = common / len(b), common / len(a)
    return 2 * p * r / (p + r)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: compare_reports.py BASE.jsonl OTHER.jsonl")
    base, other = load(sys.argv[1]), load(sys.argv[2])
    keys = sorted(set(base) & set(other), key=str)
    if not keys:
        sys.exit("compare_reports.py: no study is in both files")
    f1 = [token_f1(base[k]["report"], other[k]["report"]) for k in keys]
    dlp = [abs(base[k].get("log_prob", 0.0) - other[k].get("log_prob", 0.0)) for k in keys]
    print(json.dumps({
        "studies": len(keys), "only_in_base": len(set(base) - set(other)), "only_in_other": len(set(other) - set(base)),
        "identical_reports": sum(base[k]["report"] == other[k]["report"] for k in keys),
        "token_f1_mean": round(sum(f1) / len(f1), 4), "token_f1_min": round(min(f1), 4),
        "log_prob_abs_diff_mean": round(sum(dlp) / len(dlp), 4),
    }))


if __name__ == "__main__":
    main()
