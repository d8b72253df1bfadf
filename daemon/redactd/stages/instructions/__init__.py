"""Per-file instructions: extra regions to mask, people to keep, profile overrides.

They come from a JSON sidecar beside the input (``NAME.EXT.redact.json``) or
from ``redactd process --mask/--keep/--sidecar``; the format is published as
``schemas/sidecar.schema.json`` and described in ``docs/SIDECAR.md``.

The modules (import each name from the one that defines it):

* ``model``: the values (``Instructions``, ``Region``, ``Overrides``,
  ``ClassOverride``, ``PixelRegion``, ``KeepSplit``) and ``invalid_sidecar``.
* ``parse``: sidecar names (``SIDECAR_SUFFIX``, ``sidecar_path``,
  ``media_name_of``), reading and validating documents (``parse``,
  ``from_object``, ``load_sidecar``, ``load_instructions``,
  ``sidecar_source``) and ``--mask/--keep`` specs (``parse_spec``). Raises
  ``invalid_sidecar`` whose detail names the field and the rule, never a
  string value of the file.
* ``trust``: with ``trusted_dir`` or ``hmac_key_file`` configured, a sidecar
  is used only from the trusted folder or with a valid ``hmac`` (``Trust``,
  ``trust_for``, ``canonical``, ``sidecar_hmac``, ``read_hmac_key``); else
  ``sidecar_untrusted``.
* ``policy``: what a profile's ``[profiles.NAME.instructions]`` allows
  (``check_allowed``: ``instruction_not_allowed``, ``keep_limit_exceeded``)
  and the profile with the allowed overrides applied (``resolve``).
* ``place``: regions on a picture of a given size (``to_pixels``,
  ``place_keep``) and keep matching (``KEEP_SHARE``, ``split_kept``,
  ``best_matches``, ``protected``).

Pure computation (numpy-free even): no frames, no files except the
sidecar's one read (and the HMAC key file's).
"""
