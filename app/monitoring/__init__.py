"""The pure core: profile, validator, statistics. numpy/scipy/pydantic/stdlib only."""
