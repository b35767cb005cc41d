"""Coverage-guided fuzzers (atheris) for the code that reads untrusted input: image decoding, model bundles
and every request converter. ``scripts/fuzz.sh SECONDS`` runs each; ``docs/fuzzing.md`` has the figures."""
