"""Optional extras built on the SDK's public hooks (``sagas.contrib.encryption``: an AES-GCM payload codec)."""
