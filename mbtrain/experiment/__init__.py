"""Whole experiments: ``mb run`` (the job graph over the registry), the report and ``mb sweep``.
Imports every layer below; nothing below imports it.
"""
