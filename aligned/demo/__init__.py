"""The whole AligNet pipeline as a table of stages, run by one runner (`run_demo`; `make demo`).

The demo's own fixtures live here, not in the library: the generated shapes dataset (`shapes`) and
the class-label "people" of the image variant (`people`). See `aligned.demo.pipelines`.
"""

from aligned.demo.pipelines import format_results, run_demo

__all__ = ["format_results", "run_demo"]
