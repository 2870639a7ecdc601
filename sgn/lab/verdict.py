"""The book's verdict: each claim decided by this build's tables, in words generated from the numbers.

Chapter 11 shows the claim table and the landing page opens with its summary, so the two
never disagree and neither drifts from the intervals after a retrain. One rule decides
everything (:func:`side`): a difference counts only where its 95% interval excludes the
reference value. :func:`contradictions` re-derives every word of a table from its numbers;
the tests run it on the built book::

    evidence = claim_evidence(results_dir)
    claims = decide_claims(evidence)
    assert not contradictions(claims, evidence)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pandas as pd

from sgn.lab.report import read_table
from sgn.utils import SGNError

# What each method is, everywhere a reader sees it (tables, figures, sentences).
MODEL_LABELS = {
    "sgn": "SGN (+ assignment loss, ours)",
    "sgn_paper": "SGN (paper, as inferred)",
    "unet": "U-Net (label-conditioned, audio-only)",
    "nmf": "NMF (supervised, classes given)",
    "mixture": "mixture (no separation)",
    "irm": "IRM (oracle ratio mask)",
    "ibm": "IBM (oracle binary mask)",
}
PAPER_MUSIC_SDR = {"SGN": 5.20, "best audio-only": 4.53}  # the seed summary of the paper (its body was not available)
PRESENCE_RECALL_GOAL = 0.8  # issue 21's target for the presence head at N = 2 (chapters 03 and 05)
# A claim's status; "holds"/"fails" read "reproduced"/"not reproduced" for the paper's claims.
HOLDS, FAILS, UNDECIDED, NOT_RUN, NOT_TESTED = "holds", "fails", "undecided", "not run", "not tested"
EVIDENCE_COLUMNS = ("claim", "test", "a", "b", "mean", "ci_low", "ci_high", "reference", "unit", "expect", "side",
                    "sentence")


def model_label(name: str) -> str:
    """A method's name as the book prints it (a name it does not know, unchanged)."""
    return MODEL_LABELS.get(name, name)


def side(low: float, high: float, reference: float = 0.0) -> str:
    """``"above"`` or ``"below"`` where the interval ``[low, high]`` excludes ``reference``, else ``"undecided"``."""
    if low > reference:
        return "above"
    if high < reference:
        return "below"
    return "undecided"


def comparison_sentence(a: str, b: str, mean: float, low: float, high: float, unit: str = "dB",
                        reference: float = 0.0) -> str:
    """``a`` against ``b`` in words that follow the interval: ``a is above b by +1.20 dB [+0.40, +2.00]``
    (a difference, ``reference`` 0), ``a is below b: 0.300 [0.200, 0.400]`` (a value against a
    goal), or ``cannot be told apart from`` where the interval holds ``reference``."""
    digits = 2 if unit == "dB" else 3
    sign = "+" if reference == 0 else ""
    span = f"{mean:{sign}.{digits}f}{' ' + unit if unit else ''} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"
    where = side(low, high, reference)
    if where == "undecided":
        return f"{a} cannot be told apart from {b}: {span}, the interval holds {reference:g}"
    joiner = " by " if reference == 0 else ": "
    return f"{a} is {where} {b}{joiner}{span}"


@dataclass(frozen=True)
class Claim:
    """A claim the book decides: ``whose`` is ``paper`` or ``ours``; ``expect`` is the side of
    ``reference`` its evidence must fall on (``above``/``below``); ``untested`` says why a claim
    cannot be tested here (then it has no evidence)."""

    key: str
    short: str  # the landing page's words for it
    text: str
    whose: str
    expect: str = "above"
    chapter: str = ""
    untested: str = ""


CLAIMS = (
    Claim("audio_only", "SGN beats an audio-only network (U-Net)", f"SGN beats the best audio-only method (MUSIC: {PAPER_MUSIC_SDR['SGN']:.2f} vs "
                        f"{PAPER_MUSIC_SDR['best audio-only']:.2f} dB SDR)", "paper", chapter="03_evaluate"),
    Claim("nmf", "SGN beats NMF", "SGN beats NMF-type audio-only baselines", "paper", chapter="03_evaluate"),
    Claim("class_tokens", "the class tokens matter", "The learnable class tokens carry the separation", "paper", "below",
          "04_ablation_class_tokens"),
    Claim("grouping", "the grouping matters", "Grouping the mixture's features by class guides the separation", "paper", "below",
          "04_ablation_class_tokens"),
    Claim("any_n", "any number of sources, no retraining", "One network separates any number of sources without retraining", "paper",
          chapter="05_ablation_num_sources"),
    Claim("audio_visual", "beats audio-visual methods", "SGN (audio only) beats audio-visual methods on MUSIC", "paper",
          untested="needs MUSIC's videos and audio-visual baselines; this book has neither"),
    Claim("other_sets", "state of the art on FUSS, MUSDB18, VGG-Sound", "State of the art on FUSS, MUSDB18 and VGG-Sound (SDR, SIR, SAR)", "paper",
          untested="those sets could not be downloaded where this book was built (`sgn data download` prepares them)"),
    Claim("assign_loss", "our assignment loss helps", "Our assignment loss improves SGN", "ours", chapter="03_evaluate"),
    Claim("unseen_banks", "SGN leads on banks it never heard", "SGN separates instrument banks it never heard better "
          "than the U-Net and NMF (every held-out bank)", "ours", chapter="12_unseen_banks"),
    Claim("presence", "the trained SGN finds the classes", "The presence head of the trained SGN finds which classes "
          f"play (recall at least {PRESENCE_RECALL_GOAL} at N = 2)", "ours", chapter="03_evaluate"),
    Claim("presence_ablation", "the presence head learns at the ablation budget", "At the ablations' budget the "
          f"presence head finds which classes play (recall at least {PRESENCE_RECALL_GOAL} at N = 2), so that they can "
          "judge guessed classes", "ours", chapter="05_ablation_num_sources"),
)


def _optional(results_dir, chapter: str, name: str) -> pd.DataFrame | None:
    try:
        return read_table(results_dir, chapter, name)
    except SGNError:
        return None


def _row(claim: str, test: str, a: str, b: str, mean, low, high, expect: str, unit: str = "dB",
         reference: float = 0.0) -> dict:
    mean, low, high = float(mean), float(low), float(high)
    return {"claim": claim, "test": test, "a": a, "b": b, "mean": mean, "ci_low": low, "ci_high": high,
            "reference": reference, "unit": unit, "expect": expect, "side": side(low, high, reference),
            "sentence": comparison_sentence(a, b, mean, low, high, unit, reference)}


# Which claim each of chapter 03's paired differences bears on.
PAIR_CLAIMS = {("sgn_paper", "unet"): "audio_only", ("sgn", "unet"): "audio_only", ("sgn", "nmf"): "nmf",
               ("sgn_paper", "nmf"): "nmf", ("sgn", "sgn_paper"): "assign_loss"}


def _evaluation_rows(paired: pd.DataFrame | None) -> list[dict]:
    """Evidence from chapter 03's paired differences (every list; the first is the headline)."""
    rows = []
    for item in ([] if paired is None else paired.itertuples()):
        a, _, b = item.difference.partition(" - ")
        claim = PAIR_CLAIMS.get((a, b))
        if claim:
            rows.append(_row(claim, f"`{item.list}`", model_label(a), model_label(b), item.mean, item.ci_low,
                             item.ci_high, "above"))
    if any(r["a"] == model_label("sgn_paper") for r in rows):  # the paper's claims are about the paper's model
        rows = [r for r in rows if r["claim"] == "assign_loss" or r["a"] == model_label("sgn_paper")]
    return rows


# Which claim each class-token variant bears on: without tokens, or with two classes sharing one, the
# separation must cost SDR if the class tokens carry it.
ABLATION_CLAIMS = {"no_class_tokens": "class_tokens", "shared_tokens": "class_tokens", "no_grouping": "grouping"}


def _ablation_rows(ablation: pd.DataFrame | None, have_full_budget_paper: bool) -> list[dict]:
    rows = []
    for item in ([] if ablation is None else ablation.itertuples()):
        claim = ABLATION_CLAIMS.get(item.variant)
        if item.variant == "paper" and not have_full_budget_paper:
            # the variant is the paper's model; our loss helps where full is above it
            rows.append(_row("assign_loss", f"ablation budget: full minus `paper`", "full (ours)", "paper",
                             -item.diff, -item.diff_high, -item.diff_low, "above"))
        if claim:
            rows.append(_row(claim, f"ablation budget: `{item.variant}` minus full", f"`{item.variant}`", "full",
                             item.diff, item.diff_low, item.diff_high, "below"))
    return rows


def _num_sources_rows(sdri: pd.DataFrame | None, recall: pd.DataFrame | None) -> list[dict]:
    rows = []
    if sdri is not None:
        two = sdri[(sdri["variant"] == "trained_on_2") & (sdri["n_sources"] >= 2)]  # N = 1 is the mixture itself
        rows += [_row("any_n", f"trained on 2, N = {r.n_sources}, SDR improvement", f"the separation at N = {r.n_sources}",
                      "the mixture", r.mean, r.ci_low, r.ci_high, "above") for r in two.itertuples()]
    if recall is not None:
        two = recall[(recall["variant"] == "trained_on_2") & (recall["n_sources"] == 2)]
        rows += [_recall_row("presence_ablation", "trained on 2, N = 2, classes guessed", "the presence head's recall",
                             r) for r in two.itertuples()]
    return rows


def _presence_rows(presence: pd.DataFrame | None) -> list[dict]:
    """Evidence from chapter 03: the trained SGN models' presence recall on every two-source list."""
    recall = [] if presence is None else presence[presence["metric"] == "recall"].itertuples()
    return [_recall_row("presence", f"`{r.list}`, classes guessed", f"the presence head of {model_label(r.method)}", r)
            for r in recall]


def _recall_row(claim: str, test: str, who: str, interval) -> dict:
    """A presence recall (``interval``: ``mean``, ``ci_low``, ``ci_high``) against :data:`PRESENCE_RECALL_GOAL`."""
    return _row(claim, test, who, f"the goal {PRESENCE_RECALL_GOAL}", interval.mean, interval.ci_low, interval.ci_high,
                "above", unit="", reference=PRESENCE_RECALL_GOAL)


def _unseen_bank_rows(folds: pd.DataFrame | None) -> list[dict]:
    """Evidence from chapter 12: SGN minus each baseline on every held-out bank's mixtures (paired)."""
    rows = []
    for _, item in ([] if folds is None else folds.iterrows()):
        model, _, baseline = item["method"].partition(" - ")
        if baseline:
            rows.append(_row("unseen_banks", f"held-out bank `{item['held-out bank']}`", model_label(model),
                             model_label(baseline), item["unseen SDR"], item["unseen low"], item["unseen high"],
                             "above"))
    return rows


def claim_evidence(results_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per measured interval behind a claim, from the chapters' tables under ``results_dir``
    (a chapter that did not run gives none): ``EVIDENCE_COLUMNS``."""
    paired = _optional(results_dir, "03_evaluate", "paired_differences")
    rows = _evaluation_rows(paired)
    full_budget_paper = paired is not None and (paired["difference"] == "sgn - sgn_paper").any()
    ablation = _optional(results_dir, "04_ablation_class_tokens", "ablation_sdr")
    rows += _ablation_rows(ablation, full_budget_paper)
    rows += _presence_rows(_optional(results_dir, "03_evaluate", "presence"))
    rows += _unseen_bank_rows(_optional(results_dir, "12_unseen_banks", "folds"))
    rows += _num_sources_rows(_optional(results_dir, "05_ablation_num_sources", "sdri_by_n"),
                              _optional(results_dir, "05_ablation_num_sources", "recall_by_n"))
    return pd.DataFrame(rows, columns=list(EVIDENCE_COLUMNS))


def claim_status(claim: Claim, sides: list[str]) -> str:
    """A claim's status from its evidence's sides: it fails if any interval is on the wrong side,
    holds if all are on the expected side, else is undecided."""
    if claim.untested:
        return NOT_TESTED
    if not sides:
        return NOT_RUN
    if any(s not in (claim.expect, UNDECIDED) for s in sides):
        return FAILS
    return HOLDS if all(s == claim.expect for s in sides) else UNDECIDED


def status_word(claim: Claim, status: str) -> str:
    """``reproduced``/``not reproduced`` for the paper's claims, ``holds``/``does not hold`` for ours."""
    if status == HOLDS:
        return "reproduced" if claim.whose == "paper" else "holds"
    if status == FAILS:
        return "not reproduced" if claim.whose == "paper" else "does not hold"
    return {UNDECIDED: "undecided at this budget", NOT_RUN: "not run in this profile", NOT_TESTED: "not tested"}[status]


def decide_claims(evidence: pd.DataFrame) -> pd.DataFrame:
    """One row per claim of :data:`CLAIMS`: ``claim`` (key), ``text``, ``whose``, ``status``,
    ``verdict`` (the status in words), ``evidence`` (its intervals in words) and ``chapter``."""
    rows = []
    for claim in CLAIMS:
        mine = evidence[evidence["claim"] == claim.key]
        status = claim_status(claim, list(mine["side"]))
        told = claim.untested or "; ".join(f"{t.test}: {t.sentence}" for t in mine.itertuples())
        rows.append({"claim": claim.key, "text": claim.text, "whose": claim.whose, "status": status,
                     "verdict": status_word(claim, status), "evidence": told or "not run in this profile",
                     "chapter": claim.chapter})
    return pd.DataFrame(rows)


def contradictions(claims: pd.DataFrame, evidence: pd.DataFrame) -> list[str]:
    """Every word of the two tables that its numbers do not support: a side, a sentence ("above",
    "below", "cannot be told apart") or a claim's status and verdict. Empty when all agree."""
    found = []
    for r in evidence.itertuples():
        truth = side(r.ci_low, r.ci_high, r.reference)
        if r.side != truth:
            found.append(f"{r.claim}: {r.test}: side {r.side!r}, but [{r.ci_low:.3f}, {r.ci_high:.3f}] is {truth}")
        unit = r.unit if isinstance(r.unit, str) else ""  # an empty unit reads back from CSV as NaN
        if r.sentence != comparison_sentence(r.a, r.b, r.mean, r.ci_low, r.ci_high, unit, r.reference):
            found.append(f"{r.claim}: {r.test}: the sentence {r.sentence!r} does not follow from its interval")
    by_key = {c.key: c for c in CLAIMS}
    for r in claims.itertuples():
        claim = by_key[r.claim]
        sides = [side(e.ci_low, e.ci_high, e.reference) for e in evidence[evidence["claim"] == r.claim].itertuples()]
        truth = claim_status(claim, sides)
        if r.status != truth or r.verdict != status_word(claim, truth):
            found.append(f"{r.claim}: says {r.status!r} ({r.verdict}), the intervals say {truth!r}")
    return found


HEADLINE_NAMES = {"sgn": MODEL_LABELS["sgn"], "sgn_paper": MODEL_LABELS["sgn_paper"], "unet": "U-Net",
                  "nmf": "NMF", "irm": "IRM (oracle)"}


def _headline_sentence(headline: pd.DataFrame) -> str:
    """The headline list's SDR per method with intervals, and SGN's share of the IRM."""
    parts = [f"{name} **{headline.loc[method, 'sdr']:.2f}** {headline.loc[method, 'sdr_95ci']}"
             for method, name in HEADLINE_NAMES.items() if method in headline.index]
    share = headline.loc["sgn", "sdr"] / headline.loc["irm", "sdr"] if {"sgn", "irm"} <= set(headline.index) else math.nan
    return "; ".join(parts) + (f" (SGN: {share:.0%} of the oracle's SDR)." if math.isfinite(share) else ".")


def verdict_markdown(results_dir: str | os.PathLike, profile: str) -> str:
    """The landing page's first screen: what was run, the headline with intervals, and every
    claim sorted into reproduced, not reproduced, undecided and not tested."""
    headline = read_table(results_dir, "03_evaluate", "headline", index="method")
    training = _optional(results_dir, "02_train", "training_summary")
    data = _optional(results_dir, "01_data", "data_summary")
    claims = decide_claims(claim_evidence(results_dir))
    what = (f"{data.loc[0, 'classes']} instruments from {data.loc[0, 'banks']} General-MIDI banks, one held out"
            if data is not None else "this profile's data")
    budget = ("" if training is None else
              f", at most {int(training['steps'].max())} steps ({training['train_minutes'].max():.1f} min) per model")
    lines = [
        f"**Verdict of this build** (profile `{profile}`{budget}): synthetic data (SynthMUSIC: {what}), not the "
        "paper's MUSIC; SGN's architecture inferred from a summary of the paper; *ours* marks our additions.",
        "",
        "- **Headline**, SDR (dB) [95% interval] on two-source test mixtures of seen banks: "
        + _headline_sentence(headline),
    ]
    by_key = {c.key: c for c in CLAIMS}
    for status, title in ((HOLDS, "Reproduced / holds"), (FAILS, "Not reproduced / does not hold"),
                          (UNDECIDED, "Undecided at this budget"), (NOT_RUN, "Not run in this profile"),
                          (NOT_TESTED, "Not tested here")):
        chosen = claims[claims["status"] == status]
        if not chosen.empty:
            lines.append(f"- **{title}**: " + "; ".join(
                by_key[r.claim].short + (" (ours)" if r.whose == "ours" else "") for r in chosen.itertuples()) + ".")
    lines.append("\n*Our numbers against the paper's* gives each claim's intervals.")
    return "\n".join(lines)
