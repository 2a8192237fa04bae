"""The report's "which hyperparameters mattered" section, from ``metrics/importance.json``.

:func:`conclusion` is the paragraph that answers the original study's question (which
hyperparameters matter) with its evidence: what matters, by how much, how sure, on which
data. It states a winner only when ``tuning.assessment`` declared one; otherwise it says
the study cannot tell, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xray_hpo.config import HYPERPARAMETERS
from xray_hpo.tuning.assessment import COMMON, COMPLETE

SMALL = 0.05  # a median share under 5% "hardly matters"
METHOD_NAMES = {"fanova": "fANOVA", "pedanova": "PED-ANOVA"}


def data_phrase(sources: Mapping[str, int], n_val: int) -> str:
    """Which data the validation accuracies come from, in a few words."""
    synthetic = [s for s in sources if "synthetic" in s.lower() or "phantom" in s.lower()]
    if sources and len(synthetic) == len(sources):
        kind = "the built-in synthetic phantoms (not patient images)"
    elif synthetic:
        kind = "a mix of synthetic phantoms and imported images"
    else:
        kind = "the imported chest X-rays (" + ", ".join(f"`{s}`" for s in sources) + ")"
    return f"{kind}, scored on {n_val} validation images"


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def _view_words(details: Mapping[str, Any], view: str) -> str:
    d = details[view]
    if view == COMMON:
        return f"all {d['trials']} counted trials at epoch {d['epoch']}"
    return f"the {d['trials']} complete trials at their best epoch"


def conclusion(importance: Mapping[str, Any], data: str) -> str:
    """The paragraph: the headline view's winner with its share, interval and rank
    stability, the second evaluator's verdict, what hardly matters, and the data."""
    details = importance.get("details", {})
    headline = importance.get("headline", COMMON)
    view = details.get(headline)
    if not view or view.get("trials", 0) < 2:
        return (f"On {data}, the study cannot tell which hyperparameter matters: too few "
                "trials reached a comparable point to attribute any difference in accuracy.")
    fanova, ped = view["fanova"], view["pedanova"]
    resamples = details.get("resamples")
    where = _view_words(details, headline)
    leader = fanova["leader"]
    lead = fanova[leader]
    interval = f"{_pct(lead['low'])}–{_pct(lead['high'])}"
    ranked = sorted((n for n in HYPERPARAMETERS if n in fanova),
                    key=lambda n: (-fanova[n]["median"], n))
    small = [n for n in ranked if fanova[n]["median"] < SMALL]
    winner = importance.get("winner", "none")
    if winner != "none":
        text = (f"On {data}, **`{winner}` matters most**: over {where} it explains "
                f"{_pct(lead['median'])} of the variance in validation accuracy (fANOVA, "
                f"median of {resamples} bootstrap resamples; 95% interval {interval}), ranks "
                f"first in {_pct(lead['first_rate'])} of the resamples, and PED-ANOVA ranks it "
                f"first too ({_pct(ped[winner]['median'])} of its importance).")
        rest = [n for n in ranked[1:3] if n not in small]
        if rest:
            text += (" Next comes " if len(rest) == 1 else " Next come ") + " and ".join(
                f"`{n}` ({_pct(fanova[n]['median'])})" for n in rest) + "."
    else:
        why = (f"ranks first in only {_pct(lead['first_rate'])} of {resamples} resamples "
               f"(a winner needs {_pct(details.get('winner_rate', 0.8))})")
        if ped["leader"] != leader:
            why += (f", and PED-ANOVA puts `{ped['leader']}` first "
                    f"({_pct(ped[ped['leader']]['median'])})")
        text = (f"On {data}, **the study cannot tell which hyperparameter matters most**. "
                f"Over {where}, fANOVA gives `{leader}` the largest share "
                f"({_pct(lead['median'])}, 95% interval {interval}) but it {why}. More trials, "
                "or fewer pruned ones, would be needed to tell.")
    if small:
        names = ", ".join(f"`{n}`" for n in small)
        verb = "hardly matters" if len(small) == 1 else "hardly matter"
        text += f" Within this search space {names} {verb} (median share under 5%)."
    return text + " " + _other_view(importance)


def _other_view(importance: Mapping[str, Any]) -> str:
    """Why the headline view, and what the other one says."""
    details = importance.get("details", {})
    headline = importance.get("headline", COMMON)
    other = COMPLETE if headline == COMMON else COMMON
    if headline == COMMON:
        text = (f"The verdict uses every counted trial, complete and pruned, valued at epoch "
                f"{details[COMMON]['epoch']} (the last epoch all of them reached), because "
                f"that is {details[COMMON]['trials']} trials against "
                f"{details[COMMON]['complete']} complete ones. Accuracy that early measures "
                "how fast a configuration learns, which is what the pruner judged.")
    else:
        text = (f"The verdict uses the {details[COMPLETE]['trials']} complete trials at their "
                "best epoch (the objective itself): no common epoch holds more trials.")
    view = details.get(other)
    if view and view.get("trials", 0) >= 2:
        lead = view["fanova"]["leader"]
        verdict = (f"declares `{view['winner']}`" if view["winner"] != "none"
                   else "cannot tell")
        text += (f" Over {_view_words(details, other)} fANOVA's leader is `{lead}` "
                 f"(first in {_pct(view['fanova'][lead]['first_rate'])} of the resamples): "
                 f"that view {verdict}.")
    return text


def shares_table(importance: Mapping[str, Any]) -> str:
    """Both evaluators of the headline view: median, interval, how often first."""
    details = importance.get("details", {})
    view = details.get(importance.get("headline", COMMON), {})
    if "fanova" not in view:
        return ""
    names = sorted((n for n in HYPERPARAMETERS if n in view["fanova"]),
                   key=lambda n: (-view["fanova"][n]["median"], n))
    lines = ["| hyperparameter | " + " | ".join(
        f"{METHOD_NAMES[m]} share (95% interval) | first in" for m in ("fanova", "pedanova"))
        + " |", "|---|" + "---:|" * 4]
    for n in names:
        cells = []
        for m in ("fanova", "pedanova"):
            s = view[m][n]
            cells += [f"{_pct(s['median'])} ({_pct(s['low'])}–{_pct(s['high'])})",
                      _pct(s["first_rate"])]
        lines.append(f"| `{n}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def importance_section(importance: Mapping[str, Any], data: str) -> str:
    details = importance.get("details", {})
    return "\n".join([
        "## 4. Which hyperparameters mattered", "",
        conclusion(importance, data), "",
        shares_table(importance), "",
        f"Method: Optuna's fANOVA (seeded random forest, {details.get('fanova_trees')} trees) "
        f"and PED-ANOVA (the top {_pct(details.get('pedanova_target_quantile', 0.25))} of "
        f"trials against all), each on {details.get('resamples')} bootstrap resamples of the "
        "trials (each with its own forest seed); shares are medians, intervals the 2.5th to "
        "97.5th percentiles, *first in* how often a hyperparameter ranked first. A winner is "
        f"named only when fANOVA's leader is first in at least "
        f"{_pct(details.get('winner_rate', 0.8))} of the resamples and PED-ANOVA's leader is "
        "the same. Values: `metrics/importance.json` (both views); figures 2-4 below.",
    ])
