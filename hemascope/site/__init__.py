"""Site validation: a laboratory's acceptance test of a model bundle on its own labelled cells."""
