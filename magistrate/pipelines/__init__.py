"""The batch pipeline: input -> units -> judge actors -> published unit files -> summary.

What other layers may use of it (serve/ and analysis/ import only these names, from this
package; tests/test_imports.py checks): where an output is, how to read it back, and how
to publish a file there whole.
"""

from magistrate.pipelines.commit import SUCCESS
from magistrate.pipelines.sources import InputError, Location, locate, read_calibration
from magistrate.pipelines.store import AlreadyExists, publish_file, staged_file
from magistrate.pipelines.summary import error_cause, read_summary, verdict_dataset, verdict_files

__all__ = ["SUCCESS", "AlreadyExists", "InputError", "Location", "error_cause", "locate", "publish_file",
           "read_calibration", "read_summary", "staged_file", "verdict_dataset", "verdict_files"]
