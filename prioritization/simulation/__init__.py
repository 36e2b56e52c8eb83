"""The policy simulator: lead arrivals replayed against contractors in simulated time,
through the engine's own code, to compare priority policies (FIFO always among them).

- :mod:`~prioritization.simulation.arrivals`: the call-centre log, synthetic arrivals, shifts;
- :mod:`~prioritization.simulation.outcomes`: the fixed outcome model and conversion rates;
- :mod:`~prioritization.simulation.scenario`: the simulated world every policy faces;
- :mod:`~prioritization.simulation.runner`: one policy's discrete-event run in a database;
- :mod:`~prioritization.simulation.comparison`: throwaway databases, one child process per policy;
- :mod:`~prioritization.simulation.report`: the table, the JSON line and the chart.
"""
