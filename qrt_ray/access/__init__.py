"""Who may do what on a shared farm: API tokens, tenant limits and the audit chain.

Pure pieces only (no Ray, no store): :mod:`.tokens` makes and checks API tokens,
:mod:`.limits` holds the per-tenant limits and the submit-rate bucket, :mod:`.audit`
chains audit records so an edit, a removal or a reorder shows, and :mod:`.keys`
keeps the farm's access key on disk.
"""
