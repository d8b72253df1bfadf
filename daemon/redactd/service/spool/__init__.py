"""The service's private work area: claim, deliver, quarantine, recover.

Every move here is ordered so that a crash (``kill -9``, power loss) at any
instant leaves each input in exactly one place, and recovery can tell which.
A job's state (:class:`~.job.JobState`, kept in its ``job.json``) goes

    claiming -> claimed -> delivering | quarantining -> gone

and each step belongs to one module:

* :mod:`.job` -- ``Job``, ``Target``, ``JobState``, the staged files' kinds
  (``Kind``) and their ``Placement`` records, snapshots (``snap_of``), and
  the manifest itself (``JobStore``: load, atomic save, drop). The one thing
  all steps share; its JSON is read back by every later version.
* :mod:`.claim` -- **claiming -> claimed**: the manifest first, then the
  rename into ``work_dir/<job>/`` (the lock between two instances), the
  settle snapshot checked before and after; then the sidecar. Also the end,
  **-> gone** (``Claimer.release``: original, sidecar, claim names and job
  folder removed once the result is placed).
* :mod:`.crossmount` -- **claiming -> claimed** across mounts: a claim name
  in inbound as the lock, a durable copy, the claim name kept until the job
  ends; put back under its name (never over a newer file) when the copy
  cannot be finished.
* :mod:`.delivery` -- **claimed -> delivering -> gone**: an attempt's
  outbound temporary, the job record, publishing both.
* :mod:`.quarantine` -- **claimed -> quarantining -> gone**: the original
  (and sidecar) staged by link or copy with the quarantine mode, then a
  reason file.
* :mod:`.placement` -- the placing both of those share: a staged file
  given a free final name by hard link, exactly once across crashes
  (recognised by the recorded inode), pairs published companion first.
* :mod:`.recover` -- at start: each job folder's recorded state finished or
  undone; stray temporaries swept.
* :mod:`.workarea` -- ``Spool``, the front the supervisor uses (and the
  work-area lock, the claimed input's checks); :mod:`.errors` -- the
  exceptions; :mod:`.names` -- names of results (numbered, shortened);
  :mod:`.nofollow` -- file primitives that never follow a planted symlink.

Importers take a name from the module that defines it (this package
re-exports nothing).
"""
