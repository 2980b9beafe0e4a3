"""PocketBEIR: the offline benchmark in M-BEIR's exact layout, built from emoji and WordNet
(``lamra data build pocketbeir``), apart from the library: in the package only the CLI imports it.

- ``build``: ``build_pocketbeir`` (the eight tasks, pools, qrels, instructions, images, text pairs);
- ``emoji``, ``wordnet``: the two sources, read from their npm / Debian packages;
- ``mapping`` (emoji -> WordNet synset, with ``mapping_check``'s hand-checked precision) and
  ``concepts`` (the concept split every task shares);
- ``textpairs``: the stage-1 pairs; ``card``: the dataset card; ``subset``: a concept-whole smaller
  benchmark (test-lite, the shipped-model test).
"""
