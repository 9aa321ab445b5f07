"""``lmfusion recipe``: run a YAML-driven recipe (stages skipped when up to date), or show its stages."""

from __future__ import annotations

import argparse

from recipes.cli_args import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "recipe",
        help="run a recipe from its YAML config (build LMs, EM mix, tune per condition, evaluate, profile)",
        description="Run the ASR recipe driven by one YAML config (see recipes/configs/). Each stage is "
        "skipped when its inputs and parameters are unchanged; an interrupted stage resumes.",
    )
    p.add_argument("action", choices=["run", "status", "check"],
                   help="run the stages; status: which stages are up to date; check: validate the config only")
    p.add_argument("config", help="recipe YAML, e.g. recipes/configs/demo.yaml")
    p.add_argument("--force", nargs="*", default=[], metavar="STAGE", help="re-run these stages")
    p.add_argument("--only", nargs="*", metavar="STAGE", help="run only these stages")
    from recipes.cli_args import add_scheduler_argument

    add_scheduler_argument(p)
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from fusion.io import read_json
    from recipes.asr.report import wer_table_markdown
    from recipes.asr.run import build_stages, run_recipe
    from recipes.asr.settings import load_recipe
    from recipes.pipeline import Pipeline

    cfg = load_recipe(args.config)
    if args.action == "check":
        print(f"{args.config}: ok ({len(build_stages(cfg))} stages, work dir {cfg['work_dir']})")
        return 0
    if args.action == "status":
        pipe = Pipeline(cfg["work_dir"], log=None)
        for s in build_stages(cfg):
            try:
                state = "up to date" if pipe.is_up_to_date(s) else "to run"
            except Exception:  # an input that an earlier stage has not made yet
                state = "to run"
            print(f"{s.name:12s} {state}")
        return 0
    from recipes.scale import executor_from_args

    with executor_from_args(args) as ex:  # stages that do not read each other's outputs run side by side
        out = run_recipe(args.config, force=args.force, only=args.only, progress=not args.quiet, executor=ex)
    p = out["paths"]
    if p["eval"].exists():
        print(wer_table_markdown(read_json(p["eval"])))
    if p["in_search"].exists():
        print(p["in_search"].with_suffix(".md").read_text(encoding="utf-8"))
    print(f"report:  {p['report']}\nprofile: {p['profile']}")
    return 0
