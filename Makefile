# Two commands for newcomers: `make demo` and `make test`. Both install what is missing first.
PYTHON ?= python3
TORCH_VERSION ?= 2.14.1
TORCHVISION_VERSION ?= 0.29.1
# Detectron2 is not on PyPI: it is built from its git repository at this pinned commit.
DETECTRON2_COMMIT ?= 02b5c4e295e990042a714712c21dc79b731e8833
DETECTRON2_URL ?= git+https://github.com/facebookresearch/detectron2.git@$(DETECTRON2_COMMIT)
PYTEST_ARGS ?=
# pytest-xdist workers: one per core, at most TEST_MAX_WORKERS (each holds a model and its data);
# TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= auto
TEST_MAX_WORKERS ?= 4
REPRODUCE_ARGS ?=
DEMO_DIR ?= output/demo

.PHONY: install install-missing demo results lint test

CHECK = $(PYTHON) -W ignore tools/check_install.py --torch $(TORCH_VERSION) --torchvision $(TORCHVISION_VERSION)

# Quick when everything is there: one check; only what is missing gets installed.
install:
	@$(CHECK) --verbose 2>/dev/null || $(MAKE) --no-print-directory install-missing

install-missing:
	@$(PYTHON) -c "import sys, torch, torchvision as tv; v = lambda m: m.__version__.split('+')[0]; \
	sys.exit(not (v(torch) == '$(TORCH_VERSION)' and v(tv) == '$(TORCHVISION_VERSION)'))" 2>/dev/null \
	|| $(PYTHON) -m pip install "torch==$(TORCH_VERSION)" "torchvision==$(TORCHVISION_VERSION)"
	@$(PYTHON) -c "import sys, setuptools; sys.exit(int(setuptools.__version__.split('.')[0]) >= 81)" 2>/dev/null \
	|| $(PYTHON) -m pip install "setuptools<81"
	@$(PYTHON) -c "import detectron2._C" 2>/dev/null || { \
	  echo "detectron2 is not installed: building it from $(DETECTRON2_URL) (needs git and a compiler; takes minutes)"; \
	  $(PYTHON) -m pip install --no-build-isolation "$(DETECTRON2_URL)" || { \
	    echo "ERROR: could not install detectron2. Install it by hand (see README.md, 'Install'), then run make again." >&2; exit 1; }; }
	@$(PYTHON) -W ignore tools/check_install.py 2>/dev/null \
	|| $(PYTHON) -m pip install --no-build-isolation -e ".[test]"
	@$(CHECK) --verbose

demo: install
	$(PYTHON) tools/run_demo.py --output-dir $(DEMO_DIR)

# The README's results table: 6 models x 3 seeds on the shapes data (hours on a CPU; resumable).
results: install
	$(PYTHON) tools/reproduce.py $(REPRODUCE_ARGS)

# ruff (ruff.toml): the formatter's layout and the linter's rules; `ruff format .` fixes the first.
lint: install
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m ruff check .

test: install
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --maxprocesses $(TEST_MAX_WORKERS) --dist loadscope $(PYTEST_ARGS)
