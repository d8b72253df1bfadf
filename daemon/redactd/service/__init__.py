"""The long-running service (`redactd run`).

``watch`` finds files that are complete (with ``scan``, ``pairs``,
``stability``, ``mounts``, ``names``), ``spool`` owns the private work area
(claim, deliver, quarantine, recover), ``supervisor`` runs the main loop,
the workers, signals and reload over ``queue`` (the waiting work), ``claim``
(a candidate into a job), ``job`` (one attempt and which outcome it was),
``outcomes`` (deliver, quarantine, retry), ``space`` (the disk-full pause),
``timeouts`` (hung jobs) and ``status`` (``STATUS=``, status file, metrics
text); ``notify`` speaks the systemd notify protocol and ``daemon`` checks
the set-up and starts everything.
"""
