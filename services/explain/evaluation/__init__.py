"""Measured quality of the explanations: faithfulness against random maps, the randomisation sanity check,
how much heat sits on the white cell, and a gallery (``hemascope explain-eval``). No gRPC; imports torch.

- :mod:`.data` -- the held-out images (the training split reproduced) and the cross-scanner probe.
- :mod:`.maps` -- CAM maps per model and random 7x7 maps, cached on disk.
- :mod:`.imputation` -- ROAD's noisy linear imputation, the library's equation system built faster.
- :mod:`.faithfulness` -- deletion/insertion curves (blur baseline) and ROAD, paired statistics.
- :mod:`.sanity` -- cascading model randomisation (Adebayo et al. 2018).
- :mod:`.cellheat` -- the share of heat on the segmented white cell.
- :mod:`.figures` -- the gallery and the curves plot.
- :mod:`.run` -- the whole evaluation; :mod:`.report` -- its markdown.
"""
