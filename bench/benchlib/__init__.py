"""Machinery shared by the service benchmarks in ``bench/`` (run as scripts: ``bench/`` is on ``sys.path``).

- :mod:`benchlib.cpu` -- CPU accounting from ``/proc``: this process, the service process, everything else.
- :mod:`benchlib.machine` -- the machine and library versions, for the JSON record.
- :mod:`benchlib.service` -- a ``hemascope serve ...`` subprocess on free ports, its ``/metrics``, channels.
- :mod:`benchlib.load` -- the closed-loop N-client throughput driver and the channel-layout probe.
- :mod:`benchlib.stats` -- percentiles, sequential latency measurement, in-process median timings.
- :mod:`benchlib.table` -- the text-table rows every benchmark prints the same way.
"""
