"""Change reports for people: tables, PNG charts (Pillow only) and an HTML page."""

from geoseg.report.charts import render_transition_chart
from geoseg.report.html import ReportFacts, render_index
from geoseg.report.tables import area_fields, class_change_rows, transition_rows, write_csv_rows

__all__ = [
    "ReportFacts",
    "area_fields",
    "class_change_rows",
    "render_index",
    "render_transition_chart",
    "transition_rows",
    "write_csv_rows",
]
