"""The demo moved to :mod:`leukolens.cli.demo` (a face, beside the command line); kept for old imports."""

from leukolens.cli.demo import SAMPLES, run_analyze_demo, run_demo, sample_path

__all__ = ["SAMPLES", "run_analyze_demo", "run_demo", "sample_path"]
