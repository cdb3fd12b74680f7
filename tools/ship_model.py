"""Package a finished training run as a shipped model: ``model.pt``, the split, ``card.json`` and ``README.md``.

    python tools/ship_model.py RUN_DIR --label "..." [--name NAME] [--subset 500]

Maintainer tooling (a release step), not part of the installed package: it writes into ``scannet/pretrained/``
of the checkout.

Every number on the card is read from the run (``summary.json``, ``history.json``, ``run_config.json``) or
measured here: the MAE on a fixed, seeded subset of the run's test split, which ``tests/unit/test_pretrained.py``
recomputes from the shipped files. The shipped folder holds ``run_config.json`` and ``split_ids.parquet``, so it is
also a run folder for ``scannet explain --faithfulness``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scannet.domain import QUANTILE, domain_path, load_domain
from scannet.io.provenance import code_version, sha256_file
from scannet.pretrained import CARD_FILE, DEFAULT_MODEL, MODEL_FILE, PRETRAINED_DIR, README_FILE
from scannet.train import metrics as M
from scannet.train.launches import read_launches
from scannet.train.run_folder import BEST_MODEL_FILE, SPLIT_IDS_FILE, RunFolder

#: The published SCANN+ test MAE on QM9 (Vu et al. 2023, docs/model-spec.md §6), in report units.
PUBLISHED_SCANN_PLUS = {"homo": 32.0, "lumo": 31.0, "gap": 52.0, "alpha": 0.115, "cv": 0.041}
#: Published QM9 test MAEs (meV) the card compares with, each with its split and source. None of them is on this
#: project's split: they come from other test sets of about the same size.
PUBLISHED_QM9 = (
    {
        "model": "SchNet",
        "mae": {"homo": 41.0, "lumo": 34.0, "gap": 63.0},
        "split": "about 110,000 training molecules",
        "source": "Schütt et al., J. Chem. Phys. 148, 241722 (2018), as tabulated by Chen et al., Chem. Mater. 31, "
        "3564 (2019) (MEGNet), Table 2",
    },
    {
        "model": "SchNet, SchNetPack's default recipe",
        "mae": {"homo": 47.0, "lumo": 39.0, "gap": 74.0},
        "split": "100,000 / 10,000 / rest",
        "source": "atomistic-machine-learning/schnetpack, docs/getstarted/benchmarks.rst",
    },
    {
        "model": "PaiNN",
        "mae": {"homo": 27.6, "lumo": 20.4, "gap": 45.7},
        "split": "110,000 / 10,000 / rest",
        "source": "Schütt, Unke and Gastegger, ICML 2021 (PMLR 139, 9377), as quoted in the YangSun1/eMol README",
    },
    {
        "model": "SCANN+ (1,000 epochs, GPU)",
        "mae": {t: PUBLISHED_SCANN_PLUS[t] for t in ("homo", "lumo", "gap")},
        "split": "110,000 / 10,000 / rest of the list sorted by atom count",
        "source": "Vu et al., npj Comput. Mater. 9, 215 (2023); sinhvt3421/scann--material README",
    },
)


@dataclass
class SubsetError:
    """The MAE of a model on a fixed subset of a run's test split."""

    ids: list[str]
    mae: dict[str, float]  # report units
    seed: int  # of the sample
    in_domain: float | None = None  # fraction inside the model's applicability domain (None: it has none)


def subset_mae(model: str | Path, run_dir: str | Path, n_structures: int, seed: int = 0) -> SubsetError:
    """Predict the seeded sample of ``n_structures`` test structures of the split recorded in ``run_dir``
    (:func:`scannet.explain.recorded_test_sample`: id order, independent of the table order) with
    ``model`` and return their MAE per target; a structure that cannot be predicted raises (the subset is fixed)."""
    import scannet
    from scannet.explain import recorded_test_sample
    from scannet.units import report_unit

    predictor = scannet.load(model)
    structures = recorded_test_sample(run_dir, n_structures, seed)
    results = predictor.predict(structures, batch_size=128)
    failed = [f"{atoms.info['id']}: {r.error}" for atoms, r in zip(structures, results) if not r.ok]
    if failed:
        raise ValueError(f"{len(failed)} subset structures could not be predicted: {'; '.join(failed[:3])}")
    mae = {}
    for target in predictor.targets:
        scale, _ = report_unit(predictor.unit(target) or "")
        errors = [abs(r.values[target] - atoms.info[target]) for atoms, r in zip(structures, results)]
        mae[target] = float(np.mean(np.asarray(errors, dtype=np.float64)) * scale)
    inside = [r.domain.in_domain for r in results if r.domain is not None]
    in_domain = float(np.mean(inside)) if inside else None
    return SubsetError([str(atoms.info["id"]) for atoms in structures], mae, seed, in_domain)


def domain_facts(model_file: Path, subset: SubsetError) -> dict[str, Any] | None:
    """The card's facts of the applicability domain beside ``model_file`` (None when there is none)."""
    from ase.data import chemical_symbols

    domain = load_domain(model_file)
    if domain is None:
        return None
    return {
        "file": domain_path(model_file).name,
        "sha256": sha256_file(domain_path(model_file)),
        "elements": [chemical_symbols[z] for z in domain.elements],
        "heavy_atoms": list(domain.heavy_atoms_range),
        "reference_structures": len(domain.reference),
        "validation_structures": domain.n_validation,
        "quantile": QUANTILE,
        "threshold": domain.threshold,
        "test_subset_in_domain": subset.in_domain,
    }


def build_card(
    run_dir: Path, name: str, label: str, subset: SubsetError, model_file: Path, recipe: str, note: str = ""
) -> dict:
    """The card's facts, from the run's files and the measured subset error."""
    folder = RunFolder(run_dir)
    summary = json.loads(folder.summary.read_text())
    history = json.loads(folder.history.read_text())
    config = json.loads(folder.run_config.read_text())
    checkpoint = torch.load(model_file, map_location="cpu", weights_only=True)
    best = summary["best_epoch"]
    launches = read_launches(folder.launches)
    return {
        "name": name,
        "label": label,
        "note": note,
        "targets": config["targets"],
        "units": summary["report_units"],
        "data": {
            "dataset": config["data"],
            "n_structures": config["n_structures"],
            "split": {
                "file": SPLIT_IDS_FILE,
                "sizes": summary["split_sizes"],
                "featurized": summary["featurized_sizes"],
                "seed": config["split_seed"],
                "order": config["split_order"],
                "sha256": sha256_file(folder.split_ids),
            },
            "quarantined": summary["quarantined"],
        },
        "model": {
            "preset": config["model_preset"],
            "overrides": config["model_overrides"],
            "parameters": summary["parameters"],
        },
        "featurizer": checkpoint["featurizer_config"],
        "recipe": {
            "file": recipe,
            **config["train"],
            "precision": config["precision"],
            "compile": config.get("compile", False),
            "threads": config["threads"],
        },
        "training": {
            "epochs": summary["epochs_run"],
            "best_epoch": best + 1,
            "best_val_mae": history[best].get(M.VAL_MAE) if best < len(history) else None,
            "seconds": summary["seconds"],  # of the last launch
            "epoch_seconds": _epoch_seconds(history),  # of every epoch, across launches
            "resumed_from_epoch": summary["resumed_from_epoch"],
            "device": config["device"],
            "torch": torch.__version__,
            "launches": launches,  # every launch of the Ray-free runner, with its machine
            "launches_seconds": _launches_seconds(launches),  # their wall time in all: the training's cost
        },
        "test": {
            "structures": summary["test_evaluated"],
            "of": summary["split_sizes"]["test"],
            "mae": summary["test_mae"],
        },
        "test_subset": {"structures": len(subset.ids), "seed": subset.seed, "ids": subset.ids, "mae": subset.mae},
        "published_scann_plus": {t: PUBLISHED_SCANN_PLUS[t] for t in config["targets"] if t in PUBLISHED_SCANN_PLUS},
        "published": [
            {**row, "mae": {t: row["mae"][t] for t in config["targets"] if t in row["mae"]}}
            for row in PUBLISHED_QM9
            if config["data"] == "qm9" and any(t in row["mae"] for t in config["targets"])
        ],
        "domain": domain_facts(model_file, subset),
        "model_sha256": sha256_file(model_file),
        "code_version": code_version(),
    }


def _launches_seconds(launches: list[dict[str, Any]]) -> float | None:
    """The wall time of all launches (preparation, training, the final test); None when none was recorded."""
    return float(sum(launch["seconds"] for launch in launches)) if launches else None


def _epoch_seconds(history: list[dict]) -> float | None:
    """Total wall time of the run's epochs, across launches; None when a record predates epoch timing."""
    seconds = [record.get(M.SECONDS) for record in history]
    return float(sum(seconds)) if seconds and None not in seconds else None


def render_readme(card: dict[str, Any]) -> str:
    """The model card for people, from ``card.json``."""
    units, test, sub = card["units"], card["test"], card["test_subset"]
    published = card["published_scann_plus"]
    rows = [
        f"| {t} | {test['mae'][t]:.1f} {units[t]} | {sub['mae'][t]:.1f} {units[t]} | "
        + (f"{published[t]:g} {units[t]} (1,000 epochs, GPU) |" if t in published else "— |")
        for t in card["targets"]
    ]
    split, train, recipe = card["data"]["split"], card["training"], card["recipe"]
    sizes = " / ".join(f"{split['sizes'][p]:,}" for p in ("train", "val", "test"))
    return "\n".join(
        [
            f"# {card['name']}",
            "",
            f"**{card['label']}**",
            "",
            f"SCANN+ (`{card['model']['preset']}`, {card['model']['parameters']:,} parameters) predicting "
            f"{', '.join(card['targets'])} (one head each on one shared encoder) with a global-attention score per "
            "atom.",
            "",
            "## Test error",
            "",
            f"| target | test MAE ({test['structures']:,} of {test['of']:,} test structures) | "
            f"fixed subset ({sub['structures']} structures, re-checked by the tests) | published SCANN+ |",
            "|---|---|---|---|",
            *rows,
            "",
            "## Data and split",
            "",
            f"- Data: `{card['data']['dataset']}` (QM9 from the offline `qm9pack` CSVs: B3LYP/6-31G(2df,p) geometries "
            "and properties), elements H, C, N, O, F."
            if card["data"]["dataset"] == "qm9"
            else f"- Data: `{card['data']['dataset']}`.",
            f"- Split: {sizes} train / val / test (seed {split['seed']}, {split['order']} order), recorded in "
            f"`{split['file']}` (sha256 `{split['sha256'][:16]}…`); {card['data']['quarantined']} quarantined.",
            f"- Featurizer: {', '.join(f'{k}={v}' for k, v in card['featurizer'].items())}.",
            "",
            "## Recipe",
            "",
            f"- `{recipe['file']}`: {train['epochs']} epochs (best: epoch {train['best_epoch']}), batch "
            f"{recipe['batch_size']}, {_schedule_words(recipe)}, L2 {recipe['l2']:g}, seed {recipe['seed']}, "
            f"{recipe['precision']}"
            + (" with `torch.compile`" if recipe.get("compile") else "")
            + "."
            + (
                f" The validated and shipped weights are an exponential moving average of the weights (decay "
                f"{recipe['ema_decay']:g})."
                if recipe.get("ema_decay")
                else ""
            ),
            f"- Trained on {train['device']} with {recipe['threads']} torch threads (torch {train['torch']}); "
            + (
                f"the last launch, resumed after epoch {train['resumed_from_epoch']}, took "
                if train["resumed_from_epoch"]
                else "it took "
            )
            + f"{train['seconds'] / 3600:.2f} h"
            + (
                f"; its epochs, over all launches, {train['epoch_seconds'] / 3600:.2f} h."
                if train.get("epoch_seconds") is not None
                else "."
            ),
            f"- Reproduce: `scannet train --config {recipe['file']}` (the run folder then holds `{BEST_MODEL_FILE}`; "
            "`python tools/ship_model.py <run folder> --label ...` writes this card).",
            *([f"- Note: {card['note']}"] if card.get("note") else []),
            "- The published recipe on a GPU, one command: `scannet train --config "
            "scannet/pretrained/qm9-gpu-recipe.yaml` (1,000 epochs; not run for this model).",
            *_launch_lines(train.get("launches") or [], train.get("launches_seconds")),
            "",
            *_published_lines(card),
            *_domain_lines(card.get("domain")),
            "## Use and limits",
            "",
            "- `scannet predict FILE`, `scannet explain FILE`, `scannet screen` and `scannet.load()` use this model "
            "when no `--model` is given."
            if card["name"] == DEFAULT_MODEL
            else f"- Not the default model (`{DEFAULT_MODEL}`): give it by name, `--model {card['name']}` or "
            f'`scannet.load("{card["name"]}")`.',
            "- Trained on DFT-relaxed small organic molecules (at most 9 heavy atoms): other elements are refused; "
            "larger molecules, charged species, force-field geometries (e.g. from SMILES) and crystals are outside "
            "its training distribution and their predictions are extrapolations.",
            "",
            f"Model file sha256 `{card['model_sha256']}`; code version `{card['code_version']}`.",
            "",
        ]
    )


def _schedule_words(recipe: dict[str, Any]) -> str:
    """The learning-rate schedule in words: its kind, range and, where recorded, cosine span and warm-up."""
    words = f"{recipe['schedule']} schedule from lr {recipe['lr']:g} to {recipe['min_lr']:g}"
    if recipe["schedule"] == "cosine" and recipe.get("cosine_fraction") is not None:
        fraction = recipe["cosine_fraction"]
        words += " to the last step" if fraction == 1 else f" over the first {fraction:.0%} of the steps, then flat"
    if recipe.get("warmup_epochs"):
        words += f" after a linear warm-up of {recipe['warmup_epochs']:g} epoch(s)"
    return words


def _launch_lines(launches: list[dict[str, Any]], seconds: float | None) -> list[str]:
    """The README's record of the launches (none when the run predates them)."""
    if not launches:
        return []
    rows = [
        f"| {k + 1} | {launch['started']} | {launch['first_epoch'] + 1}-{launch['last_epoch']} | "
        f"{launch['seconds'] / 3600:.2f} h | {launch['ended_by']} | {launch['machine']['cpu']}, "
        f"{launch['machine']['cpus']} cores, {launch['machine']['torch_threads']} threads | "
        + (" / ".join(f"{x:.2f}" for x in launch["load_average"]) if launch.get("load_average") else "—")
        + " |"
        for k, launch in enumerate(launches)
    ]
    return [
        f"- Training took {seconds / 3600:.2f} h of wall clock in {len(launches)} launch(es), preparation and the "
        "final test included (`launches.jsonl` of the run):",
        "",
        "| launch | started (UTC) | epochs | wall clock | ended by | machine | load at the end (1 / 5 / 15 min) |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def _published_lines(card: dict[str, Any]) -> list[str]:
    """The README's comparison with published figures, with their sources and splits."""
    published = card.get("published") or []
    if not published:
        return []
    targets = [t for t in card["targets"] if any(t in row["mae"] for row in published)]
    units = card["units"]
    split = card["data"]["split"]
    ours = " | ".join(f"{card['test']['mae'][t]:.1f}" for t in targets)
    return [
        "## Compared with published figures",
        "",
        f"| model | {' | '.join(f'{t} ({units[t]})' for t in targets)} | split | source |",
        "|---|" + "---|" * len(targets) + "---|---|",
        f"| **this model** | {ours} | {split['sizes']['train']:,} / {split['sizes']['val']:,} / "
        f"{split['sizes']['test']:,}, seeded random (seed {split['seed']}, QM9 {split['order']} order) | this card |",
        *(
            f"| {row['model']} | "
            + " | ".join(f"{row['mae'][t]:g}" if t in row["mae"] else "—" for t in targets)
            + f" | {row['split']} | {row['source']} |"
            for row in published
        ),
        "",
        "The published figures come from other test sets of about the same size (SCANN+'s is the end of the list "
        "sorted by atom count, not a random draw): they are comparable in scale, not molecule for molecule.",
        "",
    ]


def _domain_lines(domain: dict[str, Any] | None) -> list[str]:
    """The README's section on the applicability domain (none without one)."""
    if domain is None:
        return []
    low, high = domain["heavy_atoms"]
    inside = domain.get("test_subset_in_domain")
    return [
        "## Applicability domain",
        "",
        f"`{domain['file']}` (sha256 `{domain['sha256'][:16]}…`): every prediction says whether the structure is "
        f"like the training data (docs/predict-and-explain.md): elements {', '.join(domain['elements'])}; "
        f"{low}-{high} heavy atoms; the standardised pooled vector within {domain['threshold']:.4g} of its nearest "
        f"neighbour among {domain['reference_structures']:,} seeded training structures (the "
        f"{domain['quantile']:.0%} quantile of that distance over {domain['validation_structures']:,} validation "
        "structures)." + (f" {inside:.1%} of the fixed test subset lies inside." if inside is not None else ""),
        "",
        *([f"- Built with {domain['built_with']}."] if domain.get("built_with") else []),
        *([f"- Measured: {domain['measured']}"] if domain.get("measured") else []),
        *([""] if domain.get("built_with") or domain.get("measured") else []),
    ]


def package(
    run_dir: Path, name: str, label: str, n_subset: int, recipe: str, note: str = "", out_root: Path = PRETRAINED_DIR
) -> Path:
    """Write ``out_root/name/`` from the finished run in ``run_dir``; returns the folder."""
    out = out_root / name
    out.mkdir(parents=True, exist_ok=True)
    run, shipped = RunFolder(run_dir), RunFolder(out)
    shutil.copyfile(run.best_model, out / MODEL_FILE)
    if domain_path(run.best_model).is_file():  # built for best_model.pt: the same bytes as model.pt
        shutil.copyfile(domain_path(run.best_model), domain_path(out / MODEL_FILE))
    config = json.loads(run.run_config.read_text())
    config.update(storage_path=None, data_cache=None)  # no paths of the machine it was trained on
    shipped.run_config.write_text(json.dumps(config, indent=1))  # with the split: a run folder for explain
    shutil.copyfile(run.split_ids, shipped.split_ids)
    subset = subset_mae(out / MODEL_FILE, out, n_subset)
    card = build_card(run_dir, name, label, subset, out / MODEL_FILE, recipe, note)
    (out / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    (out / README_FILE).write_text(render_readme(card))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/ship_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished training run (holds best_model.pt and summary.json)")
    parser.add_argument("--name", help="the shipped model's name (default: the run's name)")
    parser.add_argument("--label", required=True, help="one honest line: how and how long it was trained")
    parser.add_argument("--note", default="", help="anything else a user should know about how it was trained")
    parser.add_argument("--subset", type=int, default=500, help="test structures re-checked by the tests")
    parser.add_argument("--recipe", default="scannet/pretrained/qm9-cpu-recipe.yaml", help="the recipe file")
    args = parser.parse_args(argv)
    out = package(args.run_dir, args.name or args.run_dir.name, args.label, args.subset, args.recipe, args.note)
    card = json.loads((out / CARD_FILE).read_text())
    print(
        f"wrote {out}: test MAE {card['test']['mae']} on {card['test']['structures']} structures; "
        f"subset {card['test_subset']['mae']} on {card['test_subset']['structures']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
