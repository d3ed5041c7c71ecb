"""The conditional cell GAN, measured: quality (FD, KID, label and attribute fidelity, memorisation) and whether
GAN balancing helps rare classes (the five-arm protocol of `leukolens balance`, three seeds).

Expects the generator written by the training command in docs/gan.md (out/gan-pbc-rare, trained only on the reduced
training set); trains no GAN itself. The balance protocol runs here (probe mode: minutes).
"""

from __future__ import annotations

import json
from pathlib import Path

from leukolens.eval.gan import evaluate_gan, format_report, image_grid, save_grid
from leukolens.io.common import atomic_write_text
from leukolens.models.gan import sample_images
from leukolens.models.gan_checkpoint import conditions_for, load_gan
from leukolens.train.balance import BalanceConfig, format_balance, run_balance

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GAN = REPO / "out" / "gan-pbc-rare" / "generator.pt"
RARE = ("Basophil", "Monocyte", "Lymphocyte")
KEEP = 0.05
TRAIN_COMMAND = (
    "leukolens train gan --data ../shared/data/pbc --out out/gan-pbc-rare --size 64 --channels {width} "
    "--crop {crop} --context {context:g} --discriminator {discriminator} --feature-size {feature_size} "
    "--batch-size {batch} --max-minutes {minutes:g} --rare Basophil Monocyte Lymphocyte --keep 0.05 "
    "--reduction-seed 0 --aux-weight {aux:g} --mode-seeking {ms:g} --lr-generator {lr_g:g} "
    "--lr-discriminator {lr_d:g}"
)
"""The protocol GAN's training command as its checkpoint records it (``make gan-protocol`` runs the current
recipe; an older generator renders with its own settings)."""
DISCRIMINATORS = {
    "resnet": "a projection discriminator with spectral normalisation",
    "projected": "small discriminator heads on a frozen ImageNet EfficientNet-Lite0 at three depths (projected GAN)",
    "vision-aided": "a projection discriminator with spectral normalisation beside heads on frozen ImageNet "
                    "EfficientNet-Lite0 features (vision-aided GAN), each with its own hinge loss",
}


def overview(path: Path, out: Path, per_class: int = 10) -> None:
    """One picture: a row of generated cells per class."""
    checkpoint = load_gan(path)
    generator = checkpoint.build()
    rows = []
    for index in range(len(checkpoint.config.classes)):
        labels, codes = conditions_for(checkpoint.attribute_pool, index, per_class, checkpoint.config, seed=index)
        rows.append(sample_images(generator, labels, codes, seed=100 + index).numpy())
    titles = list(checkpoint.config.classes)
    grid = image_grid(rows, row_titles=titles, scale=1, title="generated (EMA generator)")
    save_grid(grid.quantize(colors=128), out)  # a palette keeps the picture in docs/ small


def run() -> str:
    if not GAN.is_file():
        raise SystemExit(f"train the GAN first (see docs/gan.md): {GAN} is missing")
    checkpoint = load_gan(GAN)
    quality = evaluate_gan(GAN, data=SHARED / "pbc", split="test", out=GAN.parent / "eval")
    overview(GAN, REPO / "docs" / "images" / "gan-pbc-overview.png")
    balance = run_balance(
        BalanceConfig(data=str(SHARED / "pbc"), rare=RARE, gan=str(GAN), keep=KEEP, seeds=(0, 1, 2), mode="probe")
    )
    atomic_write_text(GAN.parent / "bench.json", json.dumps({"quality": quality, "balance": balance}, indent=2))
    return render(quality, balance, checkpoint)


def render(quality: dict, balance: dict, checkpoint) -> str:
    """The section's text from measured results (``run`` measures; ``--from-json`` re-renders saved ones)."""
    record = checkpoint.train
    discriminator = record.get("discriminator", "resnet")
    command = TRAIN_COMMAND.format(
        width=checkpoint.config.g_channels, minutes=record.get("max_minutes"), crop=record.get("crop", "image"),
        context=record.get("context", 2.0), discriminator=discriminator,
        feature_size=record.get("feature_size", checkpoint.config.image_size), batch=record.get("batch_size", 32),
        aux=record.get("aux_weight", 0.0), ms=record.get("mode_seeking", 0.0), lr_g=record.get("lr_generator"),
        lr_d=record.get("lr_discriminator"),
    )
    framing = ("crops framed as the cell model frames them (a window twice the cell's box)"
               if record.get("crop") == "box" else "whole-cell images")
    arms = balance["arms"]
    gan_name = max((name for name in arms if "gan" in name), key=lambda name: arms[name]["mean"]["rare_recall"])
    gan_best = arms[gan_name]["mean"]["rare_recall"]
    plain_best = max(arms[a]["mean"]["rare_recall"] for a in ("class-weighted", "oversampling"))
    gain = 100 * (gan_best - plain_best)
    fidelity = {name: e["label_fidelity"] for name, e in quality["per_class"].items()}
    below = [n for n, v in fidelity.items() if v < 0.9]
    capped = [
        f"{n} ({e['real_recall_at_gan_size']:.0%})"
        for n, e in quality["per_class"].items()
        if e["real_recall_at_gan_size"] is not None and e["real_recall_at_gan_size"] < 0.9
    ]
    attributes = quality.get("attributes", {}).get("_mean")
    config = balance["config"]
    lines = [
        "## Conditional GAN: cell quality, and whether GAN balancing helps rare classes",
        f"GAN: ResNet-style generator (conditional GroupNorm on class + {len(checkpoint.config.attributes)} "
        f"attribute embeddings) and "
        f"{DISCRIMINATORS.get(discriminator, discriminator)}, auxiliary class and attribute heads (AC-GAN), "
        f"hinge loss, mode-seeking term, DiffAugment (colour, translation, cutout, dihedral), two time-scale "
        f"learning rates, EMA generator; {checkpoint.config.image_size} px {framing}, width "
        f"{checkpoint.config.g_channels}. Trained with "
        f"`{command}`: "
        f"{record.get('steps')} steps in {record.get('minutes')} minutes on this machine, **only on the reduced "
        f"training set** ({record.get('cells')} cells: {', '.join(RARE)} cut to {KEEP:.0%}, i.e. "
        + ", ".join(f"{c} {n}" for c, n in zip(checkpoint.config.classes, record.get("class_counts", [])))
        + "). The same generator serves the quality checks and the protocol. Overview: "
        "`docs/images/gan-pbc-overview.png`; per-class galleries (generated, nearest training cell, real) in "
        "`out/gan-pbc-rare/eval/`.",
        "",
        "### Quality (PBC test split as the real reference; `leukolens eval gan --checkpoint "
        "out/gan-pbc-rare/generator.pt --out out/gan-pbc-rare/eval`)",
        "Label and attribute fidelity are judged by the shipped cell model (trained on the full training split, "
        "160 px), which sees every image up-sampled from 64 px; 'real at 64 px' is the same model on real test "
        "cells down-sampled to 64 px and back, the ceiling for a 64 px generator. 'real vs real' distances compare "
        "real training cells (same class mix and count) with the test cells: the floor.",
        "",
        "```",
        format_report(quality),
        "```",
        "",
        "| measure | ours | real reference / target |",
        "|---|---|---|",
        f"| FD, ImageNet EfficientNet-Lite0 features | {quality['fd_imagenet']:.1f} | real vs real "
        f"{quality['fd_imagenet_real_reference']:.1f} |",
        f"| KID, ImageNet EfficientNet-Lite0 features | {quality['kid_imagenet']:.4f} ± "
        f"{quality['kid_imagenet_std']:.4f} | real vs real {quality['kid_imagenet_real_reference']:.4f} |",
        f"| FD, cell-model embedding | {quality['fd_cell_model']:.1f} | real vs real "
        f"{quality['fd_cell_model_real_reference']:.1f} |",
        f"| KID, cell-model embedding | {quality['kid_cell_model']:.4f} ± {quality['kid_cell_model_std']:.4f} | "
        f"real vs real {quality['kid_cell_model_real_reference']:.4f} |",
        f"| label fidelity, lowest class | {quality['label_fidelity_min']:.1%} | target at least 90% for every class "
        f"({'met' if not below else 'missed: ' + ', '.join(below)}) |",
        f"| label fidelity, mean over classes | {quality['label_fidelity_mean']:.1%} | |",
        f"| classes whose real cells the judge recalls under 90% at 64 px (the target cannot be met for them at "
        f"this size) | {', '.join(capped) or 'none'} | |",
    ]
    if attributes:
        lines.append(
            f"| attribute fidelity, mean of 11 | {attributes['fidelity']:.1%} | cell model on real cells at 64 px "
            f"{attributes['real_accuracy_at_gan_size']:.1%} |"
        )
    lines += [
        f"| memorisation ratio (median nearest-training distance, generated / real test) | "
        f"{quality['memorisation_ratio']:.2f} | about 1: no copying; near 0: copies (well above 1: generated "
        "cells lie far from every real cell, as FD says, rather than new) |",
        f"| generated cells closer to a training cell than 99% of real test cells are | "
        f"{quality['near_copy_share']:.1%} | about 1% |",
        "",
        "### Does it help? The rare-class protocol (`leukolens balance --data ../shared/data/pbc --rare Basophil "
        "Monocyte Lymphocyte --keep 0.05 --gan out/gan-pbc-rare/generator.pt`)",
        f"Training set: {', '.join(RARE)} cut to {KEEP:.0%} of their training cells (reduction seed 0, the GAN's "
        f"set), all other classes whole: "
        + ", ".join(f"{c} {n}" for c, n in zip(balance["classes"], balance["reduced_class_counts"]))
        + ". The gan arms add generated cells to each rare class up to the median class size ("
        + ", ".join(f"{c} +{n}" for c, n in balance["generated_per_class"].items())
        + f"). Mode `{config['mode']}`: the ImageNet EfficientNet-Lite0 (never the shipped cell model, which saw the "
        f"dropped cells) frozen, features of {config['views']} dihedral views of every {balance['image_size']} px "
        f"crop (real and generated alike) up-sampled to {config['input_size']} px, and a linear head trained "
        f"{config['epochs'] or 60} epochs (AdamW, one-cycle, lr 1e-3), settings fixed before any run. Scored on "
        f"the full test split ({balance['test_cells']:,} cells); mean ± standard deviation over seeds "
        f"{', '.join(map(str, config['seeds']))} "
        f"(head initialisation, order, and which generated cells). {balance['minutes']} minutes in all.",
        "",
        format_balance(balance),
        "",
        f"Target: a gan arm at least 3 points better in mean rare-class recall than the best of class-weighted and "
        f"oversampling. Measured: best gan arm ({gan_name}) {100 * gan_best:.1f}, best of the two "
        f"{100 * plain_best:.1f}, "
        f"difference {gain:+.1f} points: **{'met' if gain >= 3 else 'missed'}**. No peer figure exists for this "
        "exact protocol; published GAN-augmentation gains on WBC sets are reported under other splits and "
        "baselines, so none is set beside ours.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if "--from-json" in sys.argv:  # re-render the section from the last measured results, measuring nothing
        from benchmarks.run import write_section

        saved = json.loads((GAN.parent / "bench.json").read_text())
        write_section("gan", render(saved["quality"], saved["balance"], load_gan(GAN)))
    else:
        print(run())
