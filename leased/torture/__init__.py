"""``leased torture``: many hosts, many clients, real faults, and a checker that mutual exclusion held.

* :mod:`history`: the shared append-only record every process writes to;
* :mod:`checker`: reads a history and finds violations (sans-I/O);
* :mod:`worker`: one client process that acquires, checks and releases;
* :mod:`hosts`: a run's options, hosts and shared lease storage;
* :mod:`host_watchdog`: one host's wdmd, timer model and reset in watchdog mode;
* :mod:`harness`: starts daemons and workers, injects faults, ends the run;
* :mod:`faultfs`: the FUSE passthrough that fails or stalls one host's storage.
"""
