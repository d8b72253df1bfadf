"""The stage order of one file (image or video), the shared mask plan, the one job
runner, job records."""
