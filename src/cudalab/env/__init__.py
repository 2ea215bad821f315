"""Is this machine ready for GPU work, and what does it deliver?

``probe`` collects facts, ``diagnose`` turns facts into findings (pure functions), ``smoke`` checks a
usable GPU computes correctly, ``bench`` measures it against its peak (``peaks``), and ``fingerprint``
records the environment a result was produced in. This package knows nothing of any workload.
"""
