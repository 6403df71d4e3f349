"""Documents: ingest rate, search latency at 10k and 100k chunks, retrieval quality, vector index choice.

Four measurements in one run, each against its reference measured in the same run:
  ingest    a generated corpus (PDF pages, DOCX, Markdown, HTML) synced with the real embedder: pages/s
  latency   index.search p50/p99 at 10k and 100k chunks under a clearance filter, hybrid vs keyword vs
            vector, plus the query embedding; chunk texts are Zipf-distributed words (a ~12k-word
            vocabulary whose most frequent words are English function words, as in real text), their
            vectors real embeddings of those texts (600 embedded, each reused with small noise to reach
            the size), so FTS5 and the matrix do the work they do on real data
  quality   hit@5 and MRR on a hand-written handbook (16 documents + 10 near-neighbour distractors) and 40
            questions, per ranking mode
  vectors   the same filtered top-20 in the numpy float32 scan garrison uses, and in sqlite-vec's vec0
            (metadata-filtered KNN, loaded through apsw: the stdlib sqlite3 here cannot load extensions)

    flock /tmp/garrison-model.lock env PYTHONPATH=src python benchmarks/documents.py [--quick]

It writes its corpus with the tests' file makers (tests/documents/doc_files.py: the `test` extra's fpdf2)
and compares against sqlite-vec from the `bench` extra (skipped, and said so, when absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from garrison.documents.index import STOPWORDS, AccessFilter, ChunkRow, DocumentIndex, DocumentRecord
from garrison.documents.library import Library
from garrison.engines.embeddings import OnnxEmbedder
from garrison.registry import embedding_model_info
from garrison.security.principal import CLEARANCES
from garrison.settings import load_settings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "documents"))
from doc_files import write_docx, write_pdf, write_text  # noqa: E402

WORDS = (
    "budget contract vendor invoice payroll leave vacation policy security password laptop badge datacenter "
    "incident outage deploy release roadmap customer support ticket escalation audit compliance travel expense "
    "meal hotel flight reimbursement manager approval onboarding training benefit pension insurance health "
    "office remote hybrid schedule holiday overtime salary bonus review promotion hiring interview candidate "
    "offer notice resignation equipment software license backup encryption network firewall access account"
).split()

HANDBOOK: dict[str, str] = {
    "leave.md": "# Annual leave\nEvery employee receives 25 days of paid vacation per calendar year. Unused days "
                "carry over until March 31. Request leave in the HR portal at least two weeks ahead.",
    "sick.md": "# Sick days\nIf you are ill, tell your manager before 10am. From the fourth day of illness a "
               "doctor's note is required. Sick days do not reduce your vacation allowance.",
    "expenses.md": "# Expenses\nMeals on business trips are reimbursed up to 50 euros per day. Submit receipts "
                   "within 30 days through the finance tool. Alcohol is never reimbursed.",
    "travel.md": "# Business travel\nBook economy class for flights under six hours. Hotels must be booked "
                 "through the travel desk. Trains are preferred for trips under four hours.",
    "passwords.md": "# Passwords\nPasswords must have at least 16 characters. Use the company password manager. "
                    "Never reuse a password and never share it, not even with IT.",
    "laptop.md": "# Laptops\nNew hires receive a laptop on their first day. Report a lost or stolen laptop to "
                 "security within one hour. Laptops are replaced every three years.",
    "badges.md": "# Building access\nYour badge opens the office from 7am to 10pm. The datacenter requires a "
                 "separate badge approved by facilities. Lend your badge to no one.",
    "remote.md": "# Remote work\nYou may work from home up to three days a week. Working from another country "
                 "needs approval from HR because of tax rules.",
    "payroll.md": "# Payroll\nSalaries are paid on the 25th of each month. Payslips are available in the HR "
                  "portal. Report payroll errors to payroll@ within five days.",
    "pension.md": "# Pension\nThe company matches pension contributions up to 5% of salary. You can change your "
                  "contribution rate once per quarter.",
    "incidents.md": "# Incident response\nDeclare an incident in the #incidents channel. The on-call engineer "
                    "leads until a commander is named. Write a postmortem within five working days.",
    "deploys.md": "# Deployments\nProduction deploys happen Monday to Thursday. No deploys on Fridays or before "
                  "public holidays. Every deploy needs a reviewed change request.",
    "parental.md": "# Parental leave\nParents receive 16 weeks of paid parental leave, which can be split over "
                   "the first two years after birth or adoption.",
    "training.md": "# Training budget\nEach employee has a yearly learning budget of 1,500 euros for courses, "
                   "books and conferences, approved by their manager.",
    "overtime.md": "# Overtime\nOvertime must be approved in advance. It is compensated with time off at 1.5 "
                   "times the hours worked, taken within three months.",
    "security-incident.md": "# Reporting phishing\nForward suspicious emails to the security team and delete "
                            "them. Do not click links. Security will confirm within one hour.",
}

# Near neighbours of the documents above: same vocabulary, different answers, so ranking has to discriminate.
CONFUSERS: dict[str, str] = {
    "holidays.md": "# Public holidays\nThe office is closed on public holidays. The holiday calendar for the year "
                   "is published in December. Holidays falling on a weekend are not moved.",
    "sick-children.md": "# Caring for a sick child\nParents may take up to ten days per year to care for an ill "
                        "child. Tell your manager the same morning; no doctor's note is needed for the first day.",
    "expense-approval.md": "# Expense approval\nManagers approve expenses above 500 euros. Purchases of equipment "
                           "go through procurement, not expense claims.",
    "travel-insurance.md": "# Travel insurance\nThe company insures every business trip. Medical costs abroad are "
                           "covered; report a claim within 30 days of returning.",
    "accounts.md": "# Account lockout\nAfter five wrong passwords your account is locked for 15 minutes. IT can "
                   "unlock it after verifying your identity by video call.",
    "phones.md": "# Mobile phones\nEmployees who are on call receive a company phone. Phones are replaced every "
                 "two years; report a lost phone to IT.",
    "visitors.md": "# Visitors\nVisitors receive a day badge at reception and must be accompanied at all times. "
                   "Visitors may not enter the datacenter.",
    "coworking.md": "# Coworking spaces\nThe company pays for a coworking desk up to 200 euros a month for people "
                    "who live more than 50 km from an office.",
    "bonus.md": "# Bonus\nThe yearly bonus is paid with the March salary and depends on company results and your "
                "review.",
    "changes.md": "# Change requests\nA change request describes the change, its risk and the rollback plan. Two "
                  "reviewers approve changes to production databases.",
}

QUESTIONS: list[tuple[str, str]] = [
    ("How many vacation days do I get each year?", "leave.md"),
    ("Can I carry unused holiday into next year?", "leave.md"),
    ("When do I need a doctor's note?", "sick.md"),
    ("Who do I tell when I am ill?", "sick.md"),
    ("What is the daily limit for meals when travelling for work?", "expenses.md"),
    ("Is alcohol reimbursed?", "expenses.md"),
    ("How long do I have to submit receipts?", "expenses.md"),
    ("Can I fly business class?", "travel.md"),
    ("Should I take the train or fly for short trips?", "travel.md"),
    ("How long must a password be?", "passwords.md"),
    ("May I give my password to the IT helpdesk?", "passwords.md"),
    ("What happens if my notebook computer is stolen?", "laptop.md"),
    ("How often are laptops replaced?", "laptop.md"),
    ("What hours does my badge open the office?", "badges.md"),
    ("How do I get into the server room?", "badges.md"),
    ("How many days per week can I work from home?", "remote.md"),
    ("Can I work from abroad for a while?", "remote.md"),
    ("On which day is salary paid?", "payroll.md"),
    ("Where can I find my payslip?", "payroll.md"),
    ("Does the employer contribute to my retirement savings?", "pension.md"),
    ("How often can I change my pension contribution?", "pension.md"),
    ("Where do I declare an outage?", "incidents.md"),
    ("When is a postmortem due?", "incidents.md"),
    ("Can we ship to production on Friday?", "deploys.md"),
    ("What does every production release need?", "deploys.md"),
    ("How long is paid leave after having a baby?", "parental.md"),
    ("Does adoption give parental leave?", "parental.md"),
    ("How much money can I spend on courses and conferences?", "training.md"),
    ("Who approves my learning budget?", "training.md"),
    ("How is extra work time compensated?", "overtime.md"),
    ("Do I need approval before working overtime?", "overtime.md"),
    ("What should I do with a suspicious email?", "security-incident.md"),
    ("I got a phishing mail, who do I contact?", "security-incident.md"),
    ("16 characters", "passwords.md"),
    ("1.5 times the hours", "overtime.md"),
    ("25th of each month", "payroll.md"),
    ("travel desk hotel booking", "travel.md"),
    ("on-call engineer commander", "incidents.md"),
    ("facilities approval datacenter", "badges.md"),
    ("16 weeks", "parental.md"),
]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure_ingest(embedder: OnnxEmbedder, work: Path, scale: int) -> dict[str, Any]:
    """Sync a generated corpus from scratch with the real embedder."""
    rng = random.Random(1)
    root = work / "ingest"

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words)) + "."

    for i in range(scale):
        write_pdf(root / f"report-{i}.pdf", [text(250) for _ in range(8)], title=f"Report {i}")
        write_docx(root / f"guide-{i}.docx", f"Guide {i}", [(f"Part {j}", text(200)) for j in range(3)])
        write_text(root / f"note-{i}.md", "\n".join(f"# Section {j}\n{text(180)}" for j in range(3)))
        write_text(root / f"page-{i}.html", "".join(f"<h2>Part {j}</h2><p>{text(180)}</p>" for j in range(3)))
    settings = load_settings(home=work / "home-ingest", documents={"roots": [
        {"path": str(root), "collection": "bench", "label": "internal"}]})
    library = Library.open(settings, embed=embedder.vectors)
    try:
        started = time.perf_counter()
        report = library.sync()
        seconds = time.perf_counter() - started
    finally:
        library.close()
    assert not report.failed, report.failed
    return {
        "documents": len(report.added), "pages": report.pages, "chunks": report.chunks,
        "seconds": round(seconds, 2), "pages_per_s": round(report.pages / seconds, 1),
        "chunks_per_s": round(report.chunks / seconds, 1),
        "note": "pages = PDF pages + 1 per DOCX/Markdown/HTML document; includes parsing, chunking, embedding, "
                "one SQLite transaction per document",
    }


def build_index(path: Path, size: int, base_texts: list[str], base_vectors: np.ndarray) -> DocumentIndex:
    """`size` chunks over 3 collections x 4 labels, 50 per document, vectors = real embeddings + noise."""
    rng = np.random.default_rng(size)
    index = DocumentIndex(path)
    per_doc = 50
    for d in range(size // per_doc):
        collection = ("hr", "eng", "legal")[d % 3]
        label = CLEARANCES[(d // 3) % 4]
        picks = rng.integers(0, len(base_texts), per_doc)
        vectors = base_vectors[picks] + rng.normal(0, 0.02, (per_doc, base_vectors.shape[1])).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        record = DocumentRecord(f"doc_{d:08d}", collection, f"doc-{d}.md", "markdown", f"Document {d}", label,
                                "root", 1000, "0" * 64, None, per_doc, "2026-01-01T00:00:00.000000Z")
        rows = [ChunkRow(i, None, None, base_texts[p]) for i, p in enumerate(picks)]
        index.put(record, rows, vectors.astype(np.float32))
    return index


def zipf_words(rng: random.Random, count: int, vocabulary: list[str]) -> str:
    """Words drawn with Zipf's law (rank r has weight 1/r), as in natural text: few common, many rare."""
    return " ".join(rng.choices(vocabulary, cum_weights=_cumulative(len(vocabulary)), k=count))


def _cumulative(n: int) -> list[float]:
    total, out = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank
        out.append(total)
    return out


def measure_latency(embedder: OnnxEmbedder, work: Path, sizes: list[int], queries: int) -> dict[str, Any]:
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "de", "po", "an", "er", "ul", "is"]
    invented = sorted({"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(30_000)})
    # Zipf ranks as in English text: function words first (FTS5 queries drop them), then content words.
    vocabulary = sorted(STOPWORDS) + WORDS + invented
    base_texts = [zipf_words(rng, 120, vocabulary) for _ in range(600)]
    base_vectors = embedder.vectors(base_texts)
    query_texts = [zipf_words(rng, rng.randint(3, 8), vocabulary) for _ in range(queries)]
    embed_ms = []
    query_vectors = []
    for q in query_texts:
        started = time.perf_counter()
        query_vectors.append(embedder.vectors([q])[0])
        embed_ms.append((time.perf_counter() - started) * 1e3)
    access = AccessFilter(("eng", "hr"), CLEARANCES.index("internal"))
    out: dict[str, Any] = {
        "query_embedding_ms": {"p50": round(percentile(embed_ms, 50), 2), "p99": round(percentile(embed_ms, 99), 2)},
        "filter": "clearance internal, collections eng+hr (about 1/3 of the chunks visible)",
        "k": 5,
    }
    for size in sizes:
        started = time.perf_counter()
        index = build_index(work / f"latency-{size}.db", size, base_texts, base_vectors)
        build_s = time.perf_counter() - started
        try:
            started = time.perf_counter()
            index.search(query_texts[0], query_vectors[0], access, 5)  # first search loads the matrix
            load_ms = (time.perf_counter() - started) * 1e3
            result: dict[str, Any] = {"build_s": round(build_s, 1), "first_search_ms": round(load_ms, 1)}
            for mode in ("hybrid", "keyword", "vector"):
                times = []
                for _ in range(2):
                    for q, v in zip(query_texts, query_vectors, strict=True):
                        started = time.perf_counter()
                        hits = index.search(q, v, access, 5, mode)  # type: ignore[arg-type]
                        times.append((time.perf_counter() - started) * 1e3)
                        assert all(h.collection in access.collections and CLEARANCES.index(h.label) <= 1 for h in hits)
                result[mode] = {"p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2),
                                "searches": len(times)}
            result["vector_engines"] = compare_vector_engines(index, query_vectors, access)
            out[str(size)] = result
        finally:
            index.close()
    return out


def compare_vector_engines(index: DocumentIndex, vectors: list[np.ndarray], access: AccessFilter) -> dict[str, Any]:
    """The same filtered top-20 over the same rows: garrison's numpy scan against sqlite-vec's vec0."""
    conn = index.store.connection()
    rows = conn.execute("SELECT id, collection, label_rank, vector FROM chunks").fetchall()
    results: dict[str, Any] = {}
    numpy_times = []
    generation = int(conn.execute("SELECT generation FROM index_state").fetchone()[0])
    for v in vectors:
        started = time.perf_counter()
        view = index._vectors.view(conn, generation)
        view.top(v, access, 20)
        numpy_times.append((time.perf_counter() - started) * 1e3)
    results["numpy_float32"] = {"p50_ms": round(percentile(numpy_times, 50), 2),
                                "p99_ms": round(percentile(numpy_times, 99), 2)}
    try:
        import apsw
        import sqlite_vec
    except ImportError:
        results["sqlite_vec"] = "not installed (pip install 'garrison[bench]')"
        return results
    db = apsw.Connection(":memory:")
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{index.dimensions}] distance_metric=cosine, "
               "collection text, label_rank integer)")
    with db:
        db.executemany("INSERT INTO v (rowid, embedding, collection, label_rank) VALUES (?, ?, ?, ?)",
                       [(r[0], r[3], r[1], r[2]) for r in rows])
    marks = ", ".join("?" for _ in access.collections)
    vec_times = []
    agree = []
    for v in vectors:
        started = time.perf_counter()
        found = [r[0] for r in db.execute(
            f"SELECT rowid FROM v WHERE embedding MATCH ? AND k = 20 AND label_rank <= ? AND collection IN ({marks})",
            (v.astype(np.float32).tobytes(), access.max_rank, *access.collections))]
        vec_times.append((time.perf_counter() - started) * 1e3)
        mine = index._vectors.view(conn, generation).top(v, access, 20)
        agree.append(len(set(found) & set(mine)) / 20)
    results["sqlite_vec_vec0"] = {"p50_ms": round(percentile(vec_times, 50), 2),
                                  "p99_ms": round(percentile(vec_times, 99), 2),
                                  "top20_overlap_with_numpy": round(statistics.mean(agree), 3),
                                  "version": sqlite_vec.__version__ if hasattr(sqlite_vec, "__version__") else "?"}
    db.close()
    return results


def measure_quality(embedder: OnnxEmbedder, work: Path) -> dict[str, Any]:
    root = work / "handbook"
    for name, text in {**HANDBOOK, **CONFUSERS}.items():
        write_text(root / name, text)
    settings = load_settings(home=work / "home-quality", documents={"roots": [
        {"path": str(root), "collection": "handbook", "label": "internal"}]})
    library = Library.open(settings, embed=embedder.vectors)
    try:
        library.sync()
        access = library.access("internal")
        out: dict[str, Any] = {"documents": len(HANDBOOK) + len(CONFUSERS), "questions": len(QUESTIONS)}
        for mode in ("hybrid", "keyword", "vector"):
            hits5, reciprocal = 0, 0.0
            for question, expected in QUESTIONS:
                paths = [h.path for h in library.search(question, access, 5, mode)]  # type: ignore[arg-type]
                if expected in paths:
                    hits5 += 1
                    reciprocal += 1.0 / (paths.index(expected) + 1)
            out[mode] = {"hit_at_5": round(hits5 / len(QUESTIONS), 3), "mrr": round(reciprocal / len(QUESTIONS), 3)}
        return out
    finally:
        library.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small sizes, for a smoke run.")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "documents.json")
    args = parser.parse_args()
    threads = int(os.environ.get("GARRISON_BENCH_THREADS", "2"))
    embedder = OnnxEmbedder(embedding_model_info(), load_settings(engine={"threads": threads}))
    sizes = [1000, 5000] if args.quick else [10_000, 100_000]
    with tempfile.TemporaryDirectory(prefix="garrison-docs-bench-") as tmp:
        work = Path(tmp)
        results = {
            "benchmark": "documents",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": threads,
                        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
            "quality": measure_quality(embedder, work),
            "ingest": measure_ingest(embedder, work, 2 if args.quick else 8),
            "latency": measure_latency(embedder, work, sizes, 20 if args.quick else 50),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
