"""pe_research: positional encodings in Transformers and how they extrapolate to longer inputs.

Stages, in the order data flows (lower stages never import higher ones):
  tasks -> positions -> encodings -> model -> training / evaluation -> experiment -> report.
"""
