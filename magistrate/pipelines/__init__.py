"""The batch pipeline: input -> units -> judge actors -> published unit files -> summary.

What other layers may use of it (serve/ and analysis/ import only these names, from this
package; tests/test_imports.py checks): where an output is and how to read it back.
"""

from magistrate.pipelines.sources import InputError, Location, locate, read_calibration
from magistrate.pipelines.summary import error_cause, read_summary, verdict_dataset, verdict_files

__all__ = ["InputError", "Location", "error_cause", "locate", "read_calibration", "read_summary",
           "verdict_dataset", "verdict_files"]
