"""The conformance mixins; adopters import them from :mod:`conformance`."""
