"""The stage modules: media I/O, detection, tracking, masking, region following,
per-file instructions."""
