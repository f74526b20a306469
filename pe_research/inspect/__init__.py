"""Inspection: pictures of what an encoding does with positions and of a trained run's
attention, and the classic claims about positional encoding as experiments, built on the
modules they picture (never a second copy of them). `python -m pe_research.inspect`
(`__main__`) has the commands.

  encoding_figures  one encoding, from its module: input codes and their similarity, or
                    what it adds to the logits against the offset;
  probe             a trained run's model on fixed inputs, its attention weights captured
                    through the attention seam;
  run_figures       attention maps, entropy against length, accuracy by answer position;
  claims            the claims: numbers, figures, verdicts and claims.md;
  figures           what the figures share (PNG writing, shading).
"""
