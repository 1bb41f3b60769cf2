"""`archlore train RUN --best` and `archlore export RUN --best --out DIR`: the model a user takes home.

`train` retrains the best architecture(s) of a finished (or stopped) run with the full recipe,
once per seed, and reports test accuracy as mean and spread over the seeds. Each trained
network's weights and the results go to `RUN_DIR/final/` (`final.json`, written after every
finished training, so Ctrl-C keeps what finished).

`export` writes one architecture for use outside archlore: the architecture in the space's own
notation (`architecture.txt`: a DARTS genotype, an NB201 arch string, a user space's choices),
`model.json` (builder, options, data shape, choices), the recipe (`recipe.yaml`), the trained
weights (`weights.pt`, a state_dict) and a README with a loader snippet. The weights come from
`archlore train` when it trained that architecture (the seed with the best validation
accuracy); otherwise export trains it once, with the run's own recipe unless --recipe is given.

Which architectures are "best": the run's results at the highest fidelity any architecture
reached (successive halving's last rung), ranked by validation accuracy, as the run's own best
is chosen; test accuracy never decides.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import statistics
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from archlore.tools.errors import ArchloreError, ConfigError, DataError
from rich.table import Table as RichTable

from .cli_common import console, err, fail

log = logging.getLogger(__name__)

#: the full recipe of a built-in space (what its papers report); other spaces retrain with the run's own
FULL_RECIPES = {"nb201": "nb201-200", "darts": "darts"}


# ---------------------------------------------------------------------------------------------
# the run


def load_run(run: str, runs_dir: Path | None) -> tuple[dict, Path]:
    """The record of `run` (a run id under `runs_dir`, or a record file) and the folder final
    results go to (`RUN_DIR/final`)."""
    from .runner import check_run_id
    from .runner import runs_dir as default_runs

    path = Path(run)
    if not path.is_file():
        path = default_runs(runs_dir) / check_run_id(run) / "record.json"
    if not path.is_file():
        raise ConfigError(f"no run record for {run!r} (looked for {path}); pass a run id (and --runs-dir) or a record file")
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path} ({exc}); the run may still be writing it") from None
    if not isinstance(rec, dict) or "evaluations" not in rec or not isinstance(rec.get("settings"), dict):
        raise DataError(f"{path} is not an archlore run record with its settings")
    return rec, path.parent / "final"


def best_archs(rec: dict, top: int) -> list[dict]:
    """The run's `top` best results: at the highest fidelity reached first (by validation
    accuracy, in the record's direction), then lower fidelities; failed candidates never."""
    result: dict[str, dict] = {}
    for e in rec["evaluations"]:
        if e.get("status", "ok") != "ok" or e.get("valid") is None:
            continue
        old = result.get(e["arch"])
        if old is None or e.get("fidelity", 0) >= old.get("fidelity", 0):
            result[e["arch"]] = e
    if not result:
        raise DataError(f"run {rec.get('run_id')!r} has no successful evaluation to retrain")
    sign = 1 if rec.get("direction", "max") == "max" else -1
    ranked = sorted(result.values(), key=lambda e: (-e.get("fidelity", 0), -sign * e["valid"], e["seq"]))
    return ranked[:top]


def _settings(rec: dict, dataset: str | None, data_root: str | None) -> Any:
    from .context import RunSettings

    raw = dict(rec["settings"])
    if raw.get("executor") != "train" and dataset is None:
        raise ConfigError(
            f"run {rec.get('run_id')!r} looked its results up in a table ({raw.get('target')}); pass --dataset "
            "(digits, cifar10, cifar100, imagenet16-120, folder:PATH, npz:PATH) to train its best for real"
        )
    raw.update(executor="train", source=None)
    if dataset is not None:
        raw.update(dataset=dataset, target=dataset, recipe_spec=None)
    if data_root is not None:
        raw["data_root"] = data_root
    return RunSettings.from_json(raw)


def _recipe(settings: Any, space_name: str | None, name: str | None) -> Any:
    """--recipe, else the space's full recipe (nb201-200, darts), else (and always when
    `space_name` is None) the run's own recipe at its full epochs (a fidelity run's last rung)."""
    from archlore.tools.recipe import load_recipe

    if name is not None:
        return load_recipe(name)
    if space_name in FULL_RECIPES:
        return load_recipe(FULL_RECIPES[space_name])
    recipe = settings.training_recipe()
    return recipe.with_(epochs=settings.rungs()[-1]) if settings.fidelity else recipe


def make_trainer(settings: Any, recipe: Any, device: str | None) -> Any:
    """A TrainingExecutor for final training: the run's space, data set, builder and options."""
    from archlore.tools.env import env
    from archlore.tools.spaces import get_space
    from archlore.tools.training import TrainingExecutor

    from .runner import _dataset, builder_spec, check_training

    space = get_space(settings.space)
    settings.recipe_spec = recipe.model_dump(mode="json")
    settings.train_epochs = None
    check_training(settings, space)  # data, builder and options, before the first long training
    spec, options = builder_spec(settings, space)
    return TrainingExecutor(
        space, _dataset(settings), builder=spec, recipe=recipe, model_options=options,
        device=device or settings.device, seed=settings.seed, threads=env().archlore_train_threads or None,
    )


def _spread(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _safe_name(rank: int, seed: int) -> str:
    return f"top{rank}-seed{seed}.pt"


def retrain(rec: dict, out_dir: Path, *, top: int, seeds: int, recipe: str | None, dataset: str | None,
            data_root: str | None, device: str | None, progress: Any = None) -> dict:
    """Train the run's `top` best architectures once per seed (0..seeds-1); results and weights
    in `out_dir` (final.json is rewritten after every training, so an interrupt keeps them)."""
    import torch

    settings = _settings(rec, dataset, data_root)
    picks = best_archs(rec, top)
    trainer = make_trainer(settings, _recipe(settings, trainer_space(settings), recipe), device)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = {
        "run_id": rec.get("run_id"), "space": trainer.space.name, "target": settings.target,
        **{k: v for k, v in trainer.record().items() if k != "concurrency"},
        "seeds": list(range(seeds)), "results": [],
    }
    for rank, pick in enumerate(picks, 1):
        arch = trainer.space.from_string(pick["arch"])
        entry = {"rank": rank, "arch": pick["arch"], "choices": trainer.space.describe(arch),
                 "search": {"valid": pick["valid"], "test": pick.get("test"), "epochs": pick.get("fidelity")},
                 "runs": []}
        final["results"].append(entry)
        for seed in range(seeds):
            if progress:
                progress(f"training #{rank} {pick['arch']} with seed {seed} ({trainer.recipe.name}, {trainer.recipe.epochs} epochs)")
            t = trainer.train(arch, seed=seed)
            m = t.metrics
            run: dict[str, Any] = {"seed": seed, "status": m.status, "valid": m.valid if m.ok else None, "test": m.test,
                                   "seconds": round(m.wall_time, 2), "params": m.cost.get("params")}
            if m.ok and t.model is not None:
                weights = out_dir / _safe_name(rank, seed)
                torch.save({k: v.detach().cpu() for k, v in t.model.state_dict().items()}, weights)
                run["weights"] = weights.name
            else:
                run["reason"] = m.reason
            entry["runs"].append(run)
            ok = [r for r in entry["runs"] if r["status"] == "ok"]
            entry["test_mean"], entry["test_std"] = _spread([r["test"] for r in ok if r["test"] is not None])
            entry["valid_mean"], entry["valid_std"] = _spread([r["valid"] for r in ok])
            _atomic_json(out_dir / "final.json", final)
    return final


def trainer_space(settings: Any) -> str:
    from archlore.tools.spaces import get_space

    return get_space(settings.space).name


# ---------------------------------------------------------------------------------------------
# export


LOADER = '''\
import json
from pathlib import Path

import torch
from archlore.tools.builders import DataShape, build_model, resolve_builder

here = Path("{here}")  # this folder (change it if you move the folder){path_line}
info = json.loads((here / "model.json").read_text())
builder = resolve_builder(info["builder"], info["options"])
shape = DataShape(tuple(info["input_shape"]), info["num_classes"])
model = build_model(builder, info["choices"], shape, info["options"], candidate=info["arch"])
model.load_state_dict(torch.load(here / "weights.pt", map_location="cpu"))
model.eval()

x = torch.randn(4, *shape.input)  # real inputs: standardised as in training (see "Inputs")
with torch.no_grad():
    logits = model(x)
print(tuple(logits.shape))  # (4, {num_classes})
'''


def _weights_from_final(final_dir: Path, arch: str) -> tuple[Path, dict, dict] | None:
    """Weights `archlore train` saved for `arch`: the seed with the best validation accuracy."""
    path = final_dir / "final.json"
    if not path.is_file():
        return None
    try:
        final = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for entry in final.get("results", []):
        if entry.get("arch") != arch:
            continue
        runs = [r for r in entry.get("runs", []) if r.get("weights") and (final_dir / r["weights"]).is_file()]
        if runs:
            run = max(runs, key=lambda r: r["valid"])
            return final_dir / run["weights"], run, final
    return None


def _user_module_file(builder: str) -> Path | None:
    """The source file of a user builder `module:function` when it is one plain .py file."""
    import importlib.util

    module = builder.partition(":")[0].strip()
    if ":" not in builder or not module:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None
    if origin is None or origin.name == "__init__.py" or "." in module:
        return None
    return origin


def export_model(rec: dict, final_dir: Path, out: Path, *, recipe: str | None, dataset: str | None,
                 data_root: str | None, device: str | None, progress: Any = None) -> dict:
    """Write the run's best architecture, its recipe, trained weights and a README to `out`.

    `out` must be new, empty, or an earlier export: files of the user's own are never overwritten
    (checked before anything is trained or written)."""
    import torch
    import yaml

    earlier_export = _check_export_folder(out)
    settings = _settings(rec, dataset, data_root)
    pick = best_archs(rec, 1)[0]
    found = None if (recipe is not None or dataset is not None) else _weights_from_final(final_dir, pick["arch"])
    from archlore.tools.builders import default_builder
    from archlore.tools.recipe import Recipe
    from archlore.tools.spaces import get_space

    if found is not None:
        weights_src, run, final = found
        recipe_obj = Recipe.model_validate({k: v for k, v in final["recipe"].items() if k != "hash"})
        builder, options, data = final["builder"], final["model_options"], final["data"]
        space = get_space(settings.space)
        metrics = {"valid": run["valid"], "test": run["test"], "seed": run["seed"]}
        state = torch.load(weights_src, map_location="cpu")
    else:
        # without `archlore train`'s weights: the run's own recipe (what the search trained), never
        # a long full recipe by surprise
        trainer = make_trainer(settings, _recipe(settings, None, recipe), device)
        space = trainer.space
        if progress:
            progress(f"no weights from `archlore train` for {pick['arch']}: training it once with "
                     f"{'the run' + chr(39) + 's recipe ' if recipe is None else 'recipe '}{trainer.recipe.name} "
                     f"({trainer.recipe.epochs} epochs, seed 0); `archlore train {rec.get('run_id')} --best` first "
                     "trains it with the full recipe over seeds")
        t = trainer.train(space.from_string(pick["arch"]), seed=0)
        if not t.metrics.ok or t.model is None:
            raise DataError(f"training {pick['arch']} failed: {t.metrics.reason}")
        recipe_obj, builder, options, data = trainer.recipe, trainer.builder_name, trainer.options, trainer.data.record()
        metrics = {"valid": t.metrics.valid, "test": t.metrics.test, "seed": 0}
        state = {k: v.detach().cpu() for k, v in t.model.state_dict().items()}
    arch = space.from_string(pick["arch"])
    if builder == "auto":
        builder = default_builder(space)
    module_file = _user_module_file(builder) if ":" in builder else None
    if module_file is not None and (out / module_file.name).exists() and not earlier_export \
            and not (out / module_file.name).samefile(module_file):
        raise ConfigError(f"--out {out} already holds {module_file.name}, which archlore export did not write: "
                          "give a new or empty folder (nothing was written)")
    out.mkdir(parents=True, exist_ok=True)
    notation = space.to_string(arch)
    (out / "architecture.txt").write_text(notation + "\n")
    info = {
        "run_id": rec.get("run_id"), "space": space.name, "arch": notation, "choices": space.describe(arch),
        "builder": builder, "options": options, "input_shape": data["shape"], "num_classes": data["num_classes"],
        "data": data, "recipe_hash": recipe_obj.hash(), **metrics, "archlore_export": 1,
    }
    (out / "model.json").write_text(json.dumps(info, indent=2, default=str))
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe_obj.model_dump(mode="json"), sort_keys=False))
    torch.save(state, out / "weights.pt")
    copied = ""
    if module_file is not None:
        if not (out / module_file.name).exists() or not (out / module_file.name).samefile(module_file):
            shutil.copy2(module_file, out / module_file.name)
        copied = f"\nThe builder's module `{module_file.name}` is copied here, so the snippet finds it when run from this folder.\n"
    (out / "README.md").write_text(_readme(info, out, copied))
    return info


EXPORT_FILES = ("architecture.txt", "model.json", "recipe.yaml", "weights.pt", "README.md")


def _check_export_folder(out: Path) -> bool:
    """Whether `out` holds an earlier export; a ConfigError when it holds files export would
    overwrite that an export did not write (a user's README.md, say)."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder")
    try:
        earlier = json.loads((out / "model.json").read_text()).get("archlore_export") == 1
    except (OSError, ValueError, AttributeError):
        earlier = False
    clashing = [n for n in EXPORT_FILES if (out / n).exists()]
    if clashing and not earlier:
        raise ConfigError(f"--out {out} already holds {', '.join(clashing)}, which archlore export did not write: "
                          "give a new or empty folder (nothing was written)")
    return earlier


def _readme(info: dict, out: Path, copied: str) -> str:
    space = info["space"]
    notation = {
        "darts": "the DARTS genotype, in DARTS's own `Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...)` "
                 "notation (read it with `archlore.tools.darts.parse_genotype`)",
        "nb201": "the NAS-Bench-201 arch string",
    }.get(space, f"the canonical string of space `{space}`; `model.json` lists the choice of every position")
    path_line = "\nimport sys; sys.path.insert(0, str(here))  # the builder's module, copied here" if copied else ""
    choices = "\n".join(f"- {k}: {v}" for k, v in info["choices"].items())
    data = info["data"]
    test = "-" if info.get("test") is None else f"{info['test']:.2f}%"
    return f"""# {space} model from archlore run `{info['run_id']}`

- `architecture.txt`: {notation}
- `model.json`: builder `{info['builder']}`, its options, the input shape {tuple(info['input_shape'])}, {info['num_classes']} classes, the data set and its split
- `recipe.yaml`: how it was trained (hash `{info['recipe_hash']}`; `archlore run --recipe recipe.yaml` reads it)
- `weights.pt`: the trained weights (a `state_dict`), seed {info['seed']}: validation {info['valid']:.2f}%, test {test} on `{data.get('name')}`

## Architecture

```
{info['arch']}
```

{choices}

## Loading it

```python
{LOADER.format(here=out.resolve(), num_classes=info['num_classes'], path_line=path_line)}```
{copied}
## Inputs

The network was trained on `{data.get('name')}` ({data.get('split', '')}, split seed {data.get('split_seed')},
fingerprint `{data.get('fingerprint')}`), standardised per channel with the training split's mean and
standard deviation, as `archlore.tools.data.load_dataset` returns it; give real inputs the same treatment:
{_normalisation_text(data.get('normalisation'))}
"""


def _normalisation_text(norm: dict | None) -> str:
    if not norm:
        return "(this run's record predates the recorded statistics: load the data set with load_dataset)"
    scale = "x = x / 255 (the data were 8-bit images), then " if norm.get("divide_by_255") else ""
    return f"{scale}x = (x - mean) / std per channel, with mean = {norm['mean']} and std = {norm['std']}."


# ---------------------------------------------------------------------------------------------
# the commands


def _need_best(best: bool) -> None:
    if not best:
        raise ConfigError("say which architectures: --best (the run's best; --top N for its N best)")


def train(
    run: Annotated[str, typer.Argument(help="a run id (under --runs-dir) or a record JSON file")],
    best: Annotated[bool, typer.Option("--best", help="retrain the run's best architecture (by validation accuracy at its highest fidelity)")] = False,
    top: Annotated[int, typer.Option(help="retrain the N best", min=1)] = 1,
    recipe: Annotated[Optional[str], typer.Option(help="proxy, nb201-12, nb201-200, darts, darts-proxy or a YAML file  [default: the space's full recipe (nb201-200, darts), else the run's at its full epochs]")] = None,
    seeds: Annotated[int, typer.Option(help="train each architecture with seeds 0..N-1", min=1)] = 3,
    dataset: Annotated[Optional[str], typer.Option(help="train on another data set than the run's (needed for a tabular run)")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="where cifar10/cifar100/imagenet16-120 live")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N  [default: the run's]")] = None,
    out: Annotated[Optional[Path], typer.Option(help="folder for final.json and the weights  [default: RUN_DIR/final]")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="where runs live (default $ARCHLORE_RUNS, else ./runs)")] = None,
) -> None:
    """Retrain a run's best architecture(s) with the full recipe; test accuracy as mean ± std over seeds."""
    final, final_dir = None, out
    try:
        _need_best(best)
        rec, final_dir = load_run(run, runs_dir)
        final = retrain(rec, out or final_dir, top=top, seeds=seeds, recipe=recipe, dataset=dataset,
                        data_root=data_root, device=device, progress=lambda m: err.print(m, highlight=False))
    except ArchloreError as exc:
        fail(exc)
    except KeyboardInterrupt:
        where = f"in {(out or final_dir) / 'final.json'}" if (out or final_dir) else "none yet"
        err.print(f"interrupted: finished trainings are kept ({where})", highlight=False)
        raise typer.Exit(130) from None
    _print_final(final, out or final_dir)


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None or (isinstance(mean, float) and math.isnan(mean)) else f"{mean:.2f} ± {std:.2f}"


def _print_final(final: dict, where: Path) -> None:
    r = final["recipe"]
    d = final["data"]
    console.print(
        f"{final['run_id']}: {final['space']} on {d['name']} ({d['sizes']['train']}/{d['sizes']['valid']}/{d['sizes']['test']} "
        f"train/valid/test), recipe {r['name']} ({r['epochs']} epochs, hash {r['hash']}), builder {final['builder']}, "
        f"seeds {', '.join(map(str, final['seeds']))}", highlight=False, soft_wrap=True,
    )
    t = RichTable(title="final training: accuracy in %, mean ± std over seeds")
    for col in ("#", "arch", "search valid", "valid", "test", "failed"):
        t.add_column(col, overflow="fold")
    for e in final["results"]:
        failed = [f"seed {x['seed']}: {x['reason']}" for x in e["runs"] if x["status"] != "ok"]
        arch = e["arch"] if final["space"] in FULL_RECIPES or len(e.get("choices") or {}) > 12 else (
            f"{e['arch']} ({' '.join(f'{k}={v}' for k, v in e['choices'].items())})")
        t.add_row(str(e["rank"]), arch, f"{e['search']['valid']:.2f} ({e['search']['epochs']} ep)",
                  _pm(e.get("valid_mean"), e.get("valid_std")), _pm(e.get("test_mean"), e.get("test_std")),
                  "; ".join(failed) or "-")
    console.print(t)
    console.print(f"results and weights: {where} (archlore export ... --best --out DIR writes a loadable model)", highlight=False)


def export(
    run: Annotated[str, typer.Argument(help="a run id (under --runs-dir) or a record JSON file")],
    out: Annotated[Path, typer.Option(help="the folder to write (architecture, recipe, weights, README)")],
    best: Annotated[bool, typer.Option("--best", help="export the run's best architecture")] = False,
    recipe: Annotated[Optional[str], typer.Option(help="train with this recipe instead of using `archlore train`'s weights  [default: train's weights, else one training with the run's own recipe]")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="train on another data set than the run's (needed for a tabular run)")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="where cifar10/cifar100/imagenet16-120 live")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N  [default: the run's]")] = None,
    runs_dir: Annotated[Optional[Path], typer.Option(help="where runs live (default $ARCHLORE_RUNS, else ./runs)")] = None,
) -> None:
    """Write the best architecture (in the space's notation), its recipe, trained weights and a loader README."""
    try:
        _need_best(best)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file: give a folder")
        rec, final_dir = load_run(run, runs_dir)
        info = export_model(rec, final_dir, out, recipe=recipe, dataset=dataset, data_root=data_root, device=device,
                            progress=lambda m: err.print(m, highlight=False))
    except ArchloreError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err.print("interrupted: nothing exported", highlight=False)
        raise typer.Exit(130) from None
    test = "-" if info.get("test") is None else f"{info['test']:.2f}%"
    console.print(f"exported {info['space']} {info['arch']} (valid {info['valid']:.2f}%, test {test}, seed {info['seed']}) "
                  f"to {out}: architecture.txt, model.json, recipe.yaml, weights.pt, README.md", highlight=False, soft_wrap=True)
