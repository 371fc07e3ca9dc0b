"""Measurement and reports: pandas tables, the HTML page and the Pareto plot of a compile, a study or a
ledger (metrics.report). Reads the run time (pipelines/) and compile time (optimizers/); neither reads it.
Answer matching that task metrics use at run time lives in pipelines.answers."""
