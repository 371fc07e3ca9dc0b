"""Measurement: quality metrics (pure Python, safe at run time), cost arithmetic and pandas reports
(metrics.report, which imports pandas; only compile-time and reporting code imports it)."""
