"""The long-running service (`redactd run`).

``watch`` finds files that are complete, ``spool`` owns the private work area
(claim, deliver, quarantine, recover), ``supervisor`` runs the queue, workers,
retries and signals, ``notify`` speaks the systemd notify protocol and
``daemon`` checks the set-up and starts everything.
"""
