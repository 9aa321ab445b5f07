"""ASR recipe report: the Markdown report and its PNG plots."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusion.io import atomic_write_text, read_json
from recipes.asr.settings import (
    recipe_paths,
)
from recipes.pipeline import StageContext


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"

def wer_table_markdown(ev: Mapping[str, Any]) -> str:
    """The WER table (per condition and overall) as Markdown."""
    systems = ev["systems"]
    head = "| condition | utts | " + " | ".join(systems) + " | gap closed (global / per-cond) |"
    lines = [head, "|" + "---|" * (len(systems) + 3)]
    for key, row in ev["table"].items():
        gc = row["gap closed"]
        gap = " / ".join(
            _pct(gc.get(k)) + ("" if gc.get(k) is None else "%") for k in ("global weights", "per-condition (tags)")
        )
        cells = " | ".join(_pct(row[s]) for s in systems)
        name = f"**{key}**" if key == "all/all" else key
        lines.append(f"| {name} | {row['n_utts']} | {cells} | {gap} |")
    return "\n".join(lines)

def _save_figure(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_report(cfg: Mapping[str, Any], ev: Mapping[str, Any], tuned: Mapping[str, Any], out_dir: Path) -> list[Path]:
    from fusion.plots import _pyplot

    plt = _pyplot()
    buckets = cfg["conditions"]["buckets"]
    paths = []
    doms = sorted({k.split("/")[0] for k in ev["table"] if k != "all/all"})
    fig, axes = plt.subplots(1, len(doms), figsize=(5 * len(doms), 4), squeeze=False)
    for ax, dom in zip(axes[0], doms, strict=True):
        keys = [k for k in ev["table"] if k.startswith(dom + "/")]
        keys.sort(key=lambda k: buckets.get(k.split("/")[1], 0.0))
        xs = [buckets.get(k.split("/")[1], float("nan")) for k in keys]
        for s in ev["systems"]:
            ax.plot(xs, [100 * ev["table"][k][s] for k in keys], marker="o", label=s)
        ax.set_xticks(xs, [k.split("/")[1] for k in keys])
        ax.set_xlabel("SNR bucket (dB)")
        ax.set_ylabel("WER %")
        ax.set_title(f"domain: {dom}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    paths.append(_save_figure(plt, fig, out_dir / "wer_by_condition.png"))

    comps = [c for c in tuned["components"] if c != "am"]
    series = {dom: [c for c in tuned["conditions"] if c["domain"] == dom and c["bucket"] is not None] for dom in doms}
    paths.append(plot_weights_by_snr(series, tuned["global"]["weights"], comps, buckets,
                                     out_dir / "weights_by_condition.png"))  # fmt: skip
    return paths


def plot_weights_by_snr(series: Mapping[str, Sequence[Mapping[str, Any]]], global_weights: Mapping[str, float],
                        comps: Sequence[str], buckets: Mapping[str, float], path: Path, *,
                        title: str = "tuned weight") -> Path:  # fmt: skip
    """One panel per component: each series' tuned weight (conditions with a ``bucket`` and ``weights``;
    a missing weight counts 0) against its SNR bucket centre, the global weight dashed. Used for the
    n-best tuner's ``weights_by_condition.png`` and the in-search tuner's plot."""
    from fusion.plots import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(comps), figsize=(4.5 * len(comps), 3.8), squeeze=False)
    for ax, comp in zip(axes[0], comps, strict=True):
        for i, (label, conds) in enumerate(series.items()):
            rows = sorted(conds, key=lambda c: buckets.get(c["bucket"], 0.0))
            ax.plot([buckets[c["bucket"]] for c in rows], [c["weights"].get(comp, 0.0) for c in rows],
                    marker="os^vD"[i % 5], ls=("-", "--", ":", "-.")[i % 4], alpha=0.8, label=label)  # fmt: skip
        ax.axhline(global_weights.get(comp, 0.0), color="k", ls="--", lw=1, label="global")
        ax.set_title(f"{title}: {comp}")
        ax.set_xlabel("SNR bucket centre (dB)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save_figure(plt, fig, path)

def stage_report(cfg: Mapping[str, Any], ctx: StageContext) -> None:
    p = recipe_paths(cfg)
    ev = read_json(p["eval"])
    tuned = read_json(p["tune"])
    em = read_json(p["em"])
    plots = plot_report(cfg, ev, tuned, p["work"])
    comps = [c for c in tuned["components"] if c != "am"]
    allrow = ev["table"]["all/all"]
    d = allrow["per-condition minus global"]
    verdict = ("per-condition weights beat global weights" if d["hi"] < 0 else
               "global weights beat per-condition weights" if d["lo"] > 0 else
               "no significant difference between per-condition and global weights")  # fmt: skip
    lines = [f"# Recipe report: {cfg['name']}", "",
             f"Profile: `{p['profile']}`. Components: {', '.join(tuned['components'])} (am fixed at 1; "
             f"tuned by {tuned['method']} on the dev n-best lists).", "",
             "## Interpolation weights (EM on each domain's held-out text)", "",
             "| domain | weights | held-out ppl (domain / general / mix) |", "|---|---|---|"]  # fmt: skip
    for dom, v in em.items():
        w = ", ".join(f"{k} {x:.3f}" for k, x in v["weights"].items())
        ppl = v["ppl"]
        lines.append(f"| {dom} | {w} | {ppl[dom]:.1f} / {ppl['general']:.1f} / {ppl['mix']:.1f} |")
    if not cfg["text"]["general"] and any(v["weights"].get("general", 1.0) < 0.01 for v in em.values()):
        lines += ["", "The general LM is trained on every domain's training text (no `text.general` given), so it "
                  "holds each domain's own text, diluted: EM on in-domain held-out text gives it almost no weight. "
                  "Point `text.general` at general-purpose text for a real in-domain/general mix."]  # fmt: skip
    what = "one LM scale on the parent weights + word bonus" if cfg["tune"]["per_condition"] == "scale" else "all"
    lines += ["", "## Fusion weights per condition (dev)", "",
              f"Per condition: {what}"
              f", started from the parent's weights (global, or the domain's); kept only if better than the "
              f"parent's in {tuned.get('cv_folds', 0)}-fold cross-validation on dev, else backed off to the parent.",
              "",
              "| condition | dev utts | " + " | ".join(comps) + " | LM scale (tuned) | dev WER | dev WER global w. "
              "| CV WER own / parent | kept |",
              "|" + "---|" * (len(comps) + 7)]  # fmt: skip
    g = tuned["global"]
    gw = " | ".join(f"{g['weights'][c]:.2f}" for c in comps)
    gd = g["dev"]
    lines.append(f"| global | {gd['n_utts']} | {gw} | 1.00 | {_pct(gd['error_rate'])} | {_pct(gd['error_rate'])} | | |")
    for c in tuned["conditions"]:
        name = f"{c['domain'] or '*'}/{c['bucket'] or '*'}"
        cv = c.get("cv")
        cvs = f"{_pct(cv['wer_own'])} / {_pct(cv['wer_parent'])}" if cv else ""
        kept = f"no (-> {c['parent']})" if c.get("backoff") else "yes"
        scale = f"{c['lm_scale']:.2f}" if "lm_scale" in c else ""
        ws = " | ".join(f"{c['weights'][k]:.2f}" for k in comps)
        lines.append(f"| {name} | {c['dev']['n_utts']} | {ws} | {scale} | {_pct(c['dev']['error_rate'])} | "
                     f"{_pct(c['global_dev_wer'])} | {cvs} | {kept} |")  # fmt: skip
    lines += ["", "## Test WER (%) per condition", "", wer_table_markdown(ev), "",
              "Gap closed = (1-best WER - system WER) / (1-best WER - oracle WER).", "",
              "## Per-condition vs global weights (paired bootstrap, test)", "",
              "| condition | WER(per-cond) - WER(global) | 95% CI | p(per-cond not better) |",
              "|---|---|---|---|"]  # fmt: skip
    for key, row in ev["table"].items():
        b = row["per-condition minus global"]
        lines.append(f"| {key} | {100 * b['delta']:+.2f} | [{100 * b['lo']:+.2f}, {100 * b['hi']:+.2f}] | "
                     f"{b['p_not_better']:.3f} |")  # fmt: skip
    b2 = allrow["global minus 1-best"]
    lines += ["", f"**Verdict (all test utterances): {verdict}** "
              f"(Δ = {100 * d['delta']:+.2f} WER points, 95% CI [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]). "
              f"Global-weight rescoring vs the recogniser's 1-best: Δ = {100 * b2['delta']:+.2f} "
              f"[{100 * b2['lo']:+.2f}, {100 * b2['hi']:+.2f}].", ""]  # fmt: skip
    ov = ev["overlap"]
    order = ov["ngram_order"]
    rate = ov[f"test_{order}gram_overlap"]
    lines += ["## Test/training overlap", "",
              f"{ov['in_training_text']} of {ov['test_sentences']} test sentences occur verbatim in the LM training "
              f"text; {100 * rate:.1f}% of test {order}-grams "
              "occur in it (shared phrases of the domain, not copied sentences).", ""]  # fmt: skip
    if ev.get("snr_estimate_abs_error_db"):
        e = ev["snr_estimate_abs_error_db"]
        lines += [f"Blind SNR estimate (noise floor) vs mixing SNR: mean absolute error {e['mean']:.1f} dB "
                  f"over {e['n']} noisy test utterances.", ""]  # fmt: skip
    lines += ["## Plots", ""] + [f"![{q.stem}]({q.name})" for q in plots] + [""]
    atomic_write_text(p["report"], "\n".join(lines))
