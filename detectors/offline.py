"""What keeps the detectors' libraries off the network: the process-level part.

A monitor of production traffic connects only where it is configured to (Kafka, a sampler
endpoint). The detectors load everything from disk, and each loader is told so itself
(``local_files_only=True`` for sentence-transformers and transformers, spaCy models are
installed packages, presidio's e-mail check uses tldextract's bundled public suffix list: see
``detectors.pii``). Some libraries also read environment variables, once, when they are
imported: :func:`apply_offline_defaults` sets them, where they are not set already, before
any of those libraries is imported (``detectors.registry.build`` calls it first, which is where
the worker starts its detectors). A variable set by the operator wins.

``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``
    huggingface_hub and transformers make no call to the Hugging Face Hub (no model lookups,
    no version checks); they read them at import.
``TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS`` (empty)
    tldextract's module-level extractor, should anything call ``tldextract.extract``, uses its
    bundled snapshot instead of downloading the public suffix list (read at import). The
    detectors themselves never use that extractor.
"""

from __future__ import annotations

import os

OFFLINE_ENVIRONMENT: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
}


def apply_offline_defaults() -> dict[str, str]:
    """Set every variable of :data:`OFFLINE_ENVIRONMENT` that is not set; return those it set."""
    applied = {}
    for name, value in OFFLINE_ENVIRONMENT.items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied
