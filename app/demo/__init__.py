"""The embedded demo: synthetic data, a model, a model server and traffic scenarios."""
