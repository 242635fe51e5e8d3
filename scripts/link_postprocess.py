#!/usr/bin/env python3
"""Would descriptor post-processing make cross-camera links more precise?

Reads what `crosscam bench linking --record FILE` wrote (each described tracklet snapshot with
its ground-truth person), keeps each tracklet's last descriptor (the one the linker decides on
when the tracklet ends), and scores every pair of tracklets from different cameras under:

- raw: cosine similarity of the descriptors, as the linker uses them today;
- camera mean: each camera's mean descriptor subtracted, then re-normalised (per-camera feature
  normalisation; the mean here is over the whole run, an upper bound for an online estimate);
- CSLS: cosine minus the mean similarity of each side to its k nearest neighbours (hubness
  correction: descriptors that resemble everyone are discounted);
- k-reciprocal: Jaccard distance of k-reciprocal neighbour sets mixed with the cosine
  (Zhong et al. 2017, without query expansion), as a similarity.

For each: same-person median and minimum, different-people 99th percentile, average precision
of the cross-camera pairs ranked by similarity, best pair F1 over thresholds, and whether each
camera-2 tracklet's nearest camera-1 tracklet is the same person (rank-1, over tracklets whose
person appears in both cameras).

Usage: scripts/link_postprocess.py RECORD.jsonl [more.jsonl ...]   (needs numpy)
"""
import json
import sys

import numpy as np


def load(path):
    last = {}
    for line in open(path):
        r = json.loads(line)
        last[(r["camera"], r["tracklet"])] = r
    keys = sorted(last)
    d = np.array([last[k]["descriptor"] for k in keys], dtype=np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    truth = [last[k]["truth"] for k in keys]
    cams = [k[0] for k in keys]
    return d, truth, cams


def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def camera_mean(d, cams):
    out = d.copy()
    for c in set(cams):
        idx = [i for i, k in enumerate(cams) if k == c]
        out[idx] -= d[idx].mean(0)
    return unit(out) @ unit(out).T


def csls(s, k=5):
    n = len(s)
    r = np.sort(s - 2 * np.eye(n), axis=1)[:, -k:].mean(1)
    return 2 * s - r[:, None] - r[None, :]


def k_reciprocal(s, k=6, lam=0.3):
    n = len(s)
    order = np.argsort(-s, axis=1)
    near = [set(order[i, : k + 1]) for i in range(n)]
    recip = [{j for j in near[i] if i in near[j]} for i in range(n)]
    jac = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            u = len(recip[i] | recip[j])
            jac[i, j] = len(recip[i] & recip[j]) / u if u else 0.0
    return lam * s + (1 - lam) * jac


def score(s, truth, cams):
    n = len(truth)
    pairs = [
        (s[i, j], truth[i] is not None and truth[i] == truth[j])
        for i in range(n)
        for j in range(i + 1, n)
        if cams[i] != cams[j]
    ]
    pairs.sort(key=lambda p: -p[0])
    pos = sum(p[1] for p in pairs)
    tp, ap, best_f1, best_t = 0, 0.0, 0.0, None
    for r, (sim, ok) in enumerate(pairs, 1):
        if ok:
            tp += 1
            ap += tp / r
        f1 = 2 * tp / (r + pos) if pos else 0.0
        if f1 > best_f1:
            best_f1, best_t = f1, sim
    same = np.array([p[0] for p in pairs if p[1]])
    diff = np.array([p[0] for p in pairs if not p[1]])
    # rank-1 of camera-2 tracklets against camera-1
    c1, c2 = sorted(set(cams))[:2]
    a = [i for i in range(n) if cams[i] == c1]
    hits = total = 0
    for j in range(n):
        if cams[j] != c2 or not any(truth[i] == truth[j] for i in a):
            continue
        total += 1
        hits += truth[max(a, key=lambda i: s[i, j])] == truth[j]
    return {
        "pairs": len(pairs),
        "same": int(pos),
        "same_median": float(np.median(same)) if len(same) else None,
        "same_min": float(same.min()) if len(same) else None,
        "diff_p99": float(np.percentile(diff, 99)) if len(diff) else None,
        "ap": ap / pos if pos else None,
        "best_f1": best_f1,
        "best_threshold": best_t,
        "rank1": f"{hits}/{total}",
    }


def main():
    for path in sys.argv[1:]:
        d, truth, cams = load(path)
        raw = d @ d.T
        rows = {
            "raw": raw,
            "camera mean": camera_mean(d, cams),
            "CSLS k=5": csls(raw),
            "k-reciprocal k=6": k_reciprocal(raw),
            "camera mean + k-reciprocal": k_reciprocal(camera_mean(d, cams)),
        }
        print(f"{path}: {len(truth)} tracklets")
        print(f"{'':30s} {'same med':>8s} {'same min':>8s} {'diff p99':>8s} {'AP':>6s} {'best F1':>7s} {'rank-1':>7s}")
        for name, s in rows.items():
            r = score(s, truth, cams)
            f = lambda v: "   -   " if v is None else f"{v:8.3f}"
            print(
                f"{name:30s} {f(r['same_median'])} {f(r['same_min'])} {f(r['diff_p99'])} "
                f"{(r['ap'] or 0):6.3f} {r['best_f1']:7.3f} {r['rank1']:>7s}   ({r['same']} same-person of {r['pairs']} pairs)"
            )


if __name__ == "__main__":
    main()
