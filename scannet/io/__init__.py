"""General file and process I/O shared by the library and the platform: atomic writes (:mod:`.atomic`), where a
result came from (:mod:`.provenance`: checksums, code version) and process identity and liveness (:mod:`.process`).

Standard library only (no torch, no pyarrow), so tools can import it cheaply."""
