"""The report's two kinds of line. An error stops it before any file is written (a bad input must not leave a
half report behind); a note says what was left out and why, on stderr and in report.md, and the rest is written."""

ERROR, NOTE = "synbench.report: error: ", "synbench.report: note: "
